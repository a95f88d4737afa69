"""The executor's bookkeeping without etcd or PostgreSQL: retained slots (member_slots_ttl), the refusal carried by
CLEAR_FAILOVER, and long actions going to the task runner instead of running on the loop."""

from __future__ import annotations

import threading
from dataclasses import replace

from ctl.agent.execute import Executor
from ctl.agent.node import NodeState
from ctl.agent.taskrunner import TaskResult, TaskRunner
from ctl.config import build
from ctl.ha.actions import Action, Decision, Kind
from ctl.ha.state import HaSettings
from ctl.model import Cluster, Failover, Member, Status

RAW = {
    "scope": "demo", "name": "node1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "restapi": {"listen": "127.0.0.1:8008"},
    "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/none"},
}


class RecordingDcs:
    def __init__(self) -> None:
        self.puts: list[tuple[str, str]] = []

    def put(self, key: str, value: str, **kw) -> bool:
        self.puts.append((key, value))
        return True


def executor(clock, dcs=None, runner=None, ttl: int = 60) -> Executor:
    node = NodeState("node1", settings=HaSettings(member_slots_ttl=ttl))
    return Executor(build(RAW, "node1.yml"), node, dcs, None, clock, runner or TaskRunner(lambda: None))


def test_the_leader_keeps_slots_of_members_gone_for_less_than_member_slots_ttl():
    now = [100.0]
    ex = executor(lambda: now[0])
    members = (Member("node1"), Member("node2"), Member("node3"))
    ex.node.cluster = Cluster(scope="demo", members=members, status=Status(retain_slots=("node1", "node4")))
    assert ex.retained_members() == ["node2", "node3", "node4"]  # a new leader adopts the old leader's list
    ex.node.cluster = replace(ex.node.cluster, members=members[:2])  # node3's key expired (it crashed)
    now[0] = 150.0
    assert ex.retained_members() == ["node2", "node3", "node4"]
    now[0] = 161.0
    assert ex.retained_members() == ["node2"]


def test_member_slots_ttl_0_keeps_only_current_members():
    ex = executor(lambda: 5.0, ttl=0)
    ex.node.cluster = Cluster(scope="demo", members=(Member("node1"), Member("node2")),
                              status=Status(retain_slots=("node3",)))
    assert ex.retained_members() == ["node2"]


def test_clear_failover_records_the_refusal_it_carries():
    dcs = RecordingDcs()
    ex = executor(lambda: 0.0, dcs=dcs)
    ex.node.cluster = Cluster(scope="demo", failover=Failover(leader="node1", member="node3", mod_revision=4))
    assert ex.run(Decision((Action(Kind.CLEAR_FAILOVER, refusal="node3 lags 3.8 MB behind"),), "switchover refused"))
    assert ex.node.last_switchover_result == "node3 lags 3.8 MB behind" and dcs.puts == [("failover", "{}")]
    ex.node.last_switchover_result = None
    assert ex.run(Decision((Action(Kind.CLEAR_FAILOVER),), "taking over"))
    assert ex.node.last_switchover_result is None


def test_a_long_action_and_the_rest_of_the_list_go_to_the_task_runner():
    release = threading.Event()
    runner = TaskRunner(lambda: None)
    blocker, _ = runner.try_start("restart", "restarting", lambda j: (release.wait(5), TaskResult(True, ""))[1])
    ex = executor(lambda: 0.0, runner=runner)
    # the slot is taken: the loop does not wait, it reports that the task could not start
    assert ex.run(Decision((Action(Kind.CLONE, "node2"), Action(Kind.START_REPLICA, "node2")), "cloning")) is False
    release.set()
    assert blocker.done.wait(5)
    runner.stop()


class FrozenDcs:
    """etcd that stopped answering: every call times out (as seen by the calling thread)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failed_at: float | None = None

    def last_failure(self) -> float | None:
        return self.failed_at

    def refresh_lease(self) -> bool:
        self.calls.append("refresh_lease")
        self.failed_at = 1.0
        return False

    def renew_leader(self, name: str) -> bool:
        self.calls.append("renew_leader")
        raise AssertionError("not reached: the keepalive already found etcd gone")

    def put(self, key: str, value: str, **kw) -> bool:
        self.calls.append("put " + key)
        return True


def test_the_first_call_that_finds_etcd_gone_ends_the_actions_and_keeps_the_lock_expiry_where_it_was():
    """One timeout per failing iteration, not one per remaining call: the loop's DCS-error path (the failsafe
    exchange) runs next. A keepalive etcd did not answer does not count as a renewal."""
    dcs = FrozenDcs()
    ex = executor(lambda: 50.0, dcs=dcs)
    ex.node.last_lock_renewal = 40.0
    done = ex.run(Decision((Action(Kind.RENEW_LOCK), Action(Kind.CLEAR_FAILOVER)), "renew"))
    assert done is False and dcs.calls == ["refresh_lease"]
    assert ex.node.last_lock_renewal == 40.0
