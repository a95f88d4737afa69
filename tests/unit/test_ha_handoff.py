"""A synchronous standby's hand-off before it stops: the pure rules (ctl/ha/handoff.py) and the agent's wait
(ctl/agent/handoff.py) against a fake DCS and a fake clock."""

from __future__ import annotations

import logging

import pytest

from ctl.agent.handoff import Handoff
from ctl.errors import DcsError
from ctl.ha import handoff as rules
from ctl.ha.state import HaSettings
from ctl.model import Cluster, DynamicConfig, Leader, Member, SyncState

STREAMING = {"state": "running", "role": "replica", "replication_state": "streaming"}


def member(name: str, tags: dict | None = None, **kw) -> Member:
    fields = {**STREAMING, **kw}
    return Member(name, tags=tags or {}, **fields)


def cluster(sync: tuple[str, ...], *, node3: dict | None = None, mode: str = "on", sync_leader: str = "node1",
            node2_tags: dict | None = None) -> Cluster:
    members = [Member("node1", state="running", role="primary"), member("node2", node2_tags)]
    if node3 is not None:
        members.append(member("node3", **node3))
    return Cluster(scope="demo", config=DynamicConfig({"synchronous_mode": mode}), leader=Leader("node1"),
                   members=tuple(members), sync=SyncState(leader=sync_leader, sync_standby=sync))


# ------------------------------------------------------------------------------------------------ pure rules

def test_effective_tags_add_nosync_only_during_a_handoff():
    assert rules.effective_tags({"nofailover": False}, False) == {"nofailover": False}
    assert rules.effective_tags({"nofailover": False}, True) == {"nofailover": False, "nosync": True,
                                                                 "sync_priority": 0}
    assert rules.effective_tags({"sync_priority": 5}, True)["sync_priority"] == 0


@pytest.mark.parametrize("mode, tags, is_leader, expected", [
    ("on", {}, False, True),
    ("quorum", {}, False, True),
    ("off", {}, False, False),
    ("on", {}, True, False),  # the leader does not hand off
    ("on", {"nosync": True}, False, False),  # never a sync standby anyway
    ("on", {"sync_priority": 0}, False, False),
])
def test_who_hands_off(mode, tags, is_leader, expected):
    assert rules.needed(mode, tags, is_leader) is expected


def _wait(c: Cluster, *, strict=False, was_listed=True, released_for=0.0, mode="on") -> str | None:
    return rules.waiting_for(c, "node2", mode=mode, strict=strict, was_listed=was_listed,
                             released_for=released_for, replacement_grace=3.0)


OTHER = {}  # node3 streaming, a possible replacement


@pytest.mark.parametrize("name, c, kw, waits", [
    ("listed: wait for the leader", cluster(("node2",), node3=OTHER), {}, "release"),
    ("listed, non-strict, nobody else: wait (the leader falls back to async)", cluster(("node2",)), {}, "release"),
    ("listed, strict, nobody else: the leader keeps us, do not wait", cluster(("node2",)), {"strict": True}, None),
    ("listed, strict, the other is nofailover: nobody can replace us",
     cluster(("node2",), node3={"tags": {"nofailover": True}}), {"strict": True}, None),
    ("listed, strict, the other is nosync", cluster(("node2",), node3={"tags": {"nosync": True}}),
     {"strict": True}, None),
    ("listed, strict, the other is not streaming", cluster(("node2",), node3={"replication_state": "stopped"}),
     {"strict": True}, None),
    ("listed, strict, another can replace us", cluster(("node2",), node3=OTHER), {"strict": True}, "release"),
    ("released, key empty, replacement coming", cluster((), node3=OTHER), {"strict": True}, "another"),
    ("released, key empty, grace over", cluster((), node3=OTHER), {"strict": True, "released_for": 3.0}, None),
    ("released, key lists the replacement", cluster(("node3",), node3=OTHER), {"strict": True}, None),
    ("released, nobody could replace us", cluster(()), {}, None),
    ("never listed: go at once", cluster((), node3=OTHER), {"was_listed": False}, None),
    ("listed under another leader's key: not ours", cluster(("node2",), node3=OTHER, sync_leader="node9"),
     {"was_listed": False}, None),
    ("quorum: only the release counts", cluster((), node3=OTHER, mode="quorum"), {"mode": "quorum"}, None),
    ("quorum: listed", cluster(("node2",), node3=OTHER, mode="quorum"), {"mode": "quorum"}, "release"),
])
def test_what_the_handoff_waits_for(name, c, kw, waits):
    got = _wait(c, **kw)
    if waits is None:
        assert got is None, name
    else:
        assert got is not None and waits in got, name


def test_the_leader_wakes_when_its_sync_standby_turns_nosync_or_stops():
    c = cluster(("node2",), node3=OTHER)
    assert rules.leader_wakes(c, "node1", member("node2", {"nosync": True, "sync_priority": 0}))
    assert rules.leader_wakes(c, "node1", member("node2", state="restarting"))
    assert not rules.leader_wakes(c, "node1", member("node2"))  # a routine update
    assert not rules.leader_wakes(c, "node1", member("node3", {"nosync": True}))  # not a sync standby
    assert not rules.leader_wakes(c, "node3", member("node2", {"nosync": True}))  # not the leader
    assert not rules.leader_wakes(None, "node1", member("node2", {"nosync": True}))


# ------------------------------------------------------------------------------------------------ the wait

class FakeDcs:
    """The DCS protocol the hand-off uses (get_cluster), answering from a script of cluster states."""

    def __init__(self, states: list) -> None:
        self.states = states
        self.reads = 0

    def get_cluster(self) -> Cluster:
        state = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        if isinstance(state, Exception):
            raise state
        return state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(states: list, *, strict=True, publish_ok=True, loop_wait=2, tags=None, is_leader=False, known=None):
    clock = Clock()
    seen: list[dict] = []
    h = Handoff("node2", FakeDcs(states), lambda: (seen.append(h.tags({})), publish_ok)[1],
                clock=clock, sleep=clock.sleep)
    stopped_at: list[float] = []

    def stop():
        stopped_at.append(clock.now)
        assert h.active == (seen != [])  # the nosync tag stays on while PostgreSQL stops
        return "stopped"

    settings = HaSettings(loop_wait=loop_wait, synchronous_mode="on", synchronous_mode_strict=strict)
    assert h.around(stop, what="restart", settings=settings, configured=tags or {}, is_leader=is_leader,
                    known=known or (states[0] if isinstance(states[0], Cluster) else None)) == "stopped"
    assert not h.active and h.tags({}) == {}  # a candidate again afterwards
    return stopped_at[0], seen, h


def test_stops_once_the_key_lists_the_replacement():
    listed, empty, moved = cluster(("node2",), node3=OTHER), cluster((), node3=OTHER), cluster(("node3",), node3=OTHER)
    at, seen, _ = run([listed, listed, empty, empty, moved])
    assert seen == [{"nosync": True, "sync_priority": 0}]
    assert at == pytest.approx(4 * 0.25)


def test_a_leader_faster_than_our_first_read_still_gets_its_replacement_listed_first():
    # the loop's `restarting` member key made the leader drop us before the hand-off read the DCS
    listed, empty, moved = cluster(("node2",), node3=OTHER), cluster((), node3=OTHER), cluster(("node3",), node3=OTHER)
    at, _, _ = run([empty, empty, empty, moved], known=listed)
    assert at == pytest.approx(3 * 0.25)
    at, _, _ = run([empty], known=cluster((), node3=OTHER))  # not a sync standby before: no reason to wait
    assert at == 0


def test_the_wait_is_bounded_by_twice_loop_wait(caplog):
    with caplog.at_level(logging.WARNING, logger="hactl.agent"):
        at, _, _ = run([cluster(("node2",), node3=OTHER)], loop_wait=2)
    assert 4.0 <= at < 4.3
    assert "restart anyway" in caplog.text


def test_a_dcs_error_or_a_failed_member_update_skips_the_wait():
    at, _, _ = run([DcsError("etcd down")])
    assert at == 0
    at, seen, _ = run([cluster(("node2",), node3=OTHER)], publish_ok=False)
    assert at == 0 and len(seen) == 1


def test_no_handoff_for_the_leader_a_nosync_member_or_async_mode():
    for kw in ({"is_leader": True}, {"tags": {"nosync": True}}):
        at, seen, _ = run([cluster(("node2",), node3=OTHER)], **kw)
        assert at == 0 and seen == []


def test_no_handoff_when_postgres_is_not_running_and_a_cancel_ends_the_wait():
    h = Handoff("node2", FakeDcs([cluster(("node2",), node3=OTHER)]), lambda: True)
    settings = HaSettings(loop_wait=10, synchronous_mode="on")
    assert h.around(lambda: h.active, what="stop", settings=settings, configured={}, is_leader=False, known=None,
                    running=False) is False
    clock = Clock()
    h = Handoff("node2", FakeDcs([cluster(("node2",), node3=OTHER)]), lambda: True, clock=clock, sleep=clock.sleep)
    assert h.around(lambda: clock.now, what="restart", settings=settings, configured={}, is_leader=False, known=None,
                    cancelled=lambda: clock.now >= 1.0) == pytest.approx(1.0)
