"""A 3-node hactl cluster on a real 3-member etcd: the member that the leader's agent talks to is SIGKILLed, then
(in a second round) SIGSTOPped. The leader keeps its lock, writes go on, `hactl list` keeps answering.

Every agent lists all three endpoints, a raft follower first, so at the start every agent talks to that member
(the agent logs `etcd: talking to <endpoint>`; the test reads the leader's log to find its member each round).
HACTL_MEMBER_LOSS_ROUNDS=N repeats the kill and freeze rounds N times on the same cluster.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time

import pytest

from tests.support.agents import REPO, AgentCluster
from tests.support.etcd_cluster import EtcdCluster, EtcdMember
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("HACTL_MEMBER_LOSS_ROUNDS", "1"))
_TALKING = re.compile(r"etcd: talking to (\S+)")


@pytest.fixture(scope="module")
def setup(request):
    etcd = EtcdCluster(3).start()
    raft = etcd.raft_leader()
    follower = next(m for m in etcd.members if m is not raft)
    order = [follower] + [m for m in etcd.members if m is not follower]
    c = AgentCluster(etcd, ttl=10, loop_wait=1, retry_timeout=4,  # type: ignore[arg-type]
                     etcd_hosts=tuple(m.hostport for m in order))
    for name in ("node1", "node2", "node3"):
        c.add_node(name)
    try:
        c.start_all()
        c.wait_healthy(timeout=120)
        c.sql(c.leader() or "", "CREATE TABLE IF NOT EXISTS ticks (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        yield c, etcd
    finally:
        if request.session.testsfailed:
            print("\n" + c.logs())
        c.cleanup()
        etcd.cleanup()


class _Writer(threading.Thread):
    """Inserts a row into the leader every 20 ms; records when each commit returned."""

    def __init__(self, c: AgentCluster, leader: str) -> None:
        super().__init__(daemon=True)
        self.c, self.leader = c, leader
        self.commits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.c.connect(self.leader, timeout=1)
                conn.execute("INSERT INTO ticks DEFAULT VALUES")
                self.commits.append(time.monotonic())
            except Exception:  # noqa: BLE001 - a failed write is a gap, measured below
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(0.02)
        if conn is not None:
            conn.close()

    def max_gap(self, start: float, end: float) -> float:
        times = [start] + [t for t in self.commits if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))


def _talks_to(c: AgentCluster, name: str, etcd: EtcdCluster) -> EtcdMember:
    with open(c.nodes[name].log_path, encoding="utf-8", errors="replace") as f:
        found = _TALKING.findall(f.read())
    assert found, f"{name} never logged its etcd endpoint"
    return next(m for m in etcd.members if m.hostport == found[-1])


def _list_seconds(c: AgentCluster, leader: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ctl", "-c", c.nodes["node2"].config_path, "list"],
                          capture_output=True, text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"\| {leader} +\|.*\| Leader ", proc.stdout), proc.stdout
    return took


def _round(c: AgentCluster, etcd: EtcdCluster, fault: str) -> dict:
    leader = c.leader()
    assert leader
    member = _talks_to(c, leader, etcd)
    was_raft_leader = etcd.raft_leader() is member
    log_offset = os.path.getsize(c.nodes[leader].log_path)
    writer = _Writer(c, leader)
    writer.start()
    wait_for(lambda: len(writer.commits) > 10, timeout=10, interval=0.05, what="writes before the fault")
    start = time.monotonic()
    (etcd.kill if fault == "kill" else etcd.freeze)(member)
    try:
        lists = [_list_seconds(c, leader) for _ in range(3)]
        # longer than retry_timeout: a leader that could not renew would have demoted by now
        time.sleep(c.retry_timeout + 2)
        end = time.monotonic()
        assert c.leader() == leader, "a new leader was elected"
        assert c.writable(leader)
        with open(c.nodes[leader].log_path, encoding="utf-8", errors="replace") as f:
            f.seek(log_offset)
            new_log = f.read()
        assert "demoting" not in new_log, new_log
        moved = _talks_to(c, leader, etcd)
        assert moved is not member, f"{leader} still talks to the {fault}ed member"
    finally:
        writer.stop.set()
        writer.join(timeout=10)
        if fault == "kill":
            etcd.restart(member)
        else:
            etcd.thaw(member)
        wait_for(lambda: etcd.healthy(member), timeout=30, what="etcd member healthy again")
    gap = writer.max_gap(start, end)
    result = {"fault": fault, "member": member.name, "raft_leader": was_raft_leader, "write_gap": gap,
              "list_max": max(lists), "list_median": statistics.median(lists)}
    print(f"{fault} {member.name}{' (raft leader)' if was_raft_leader else ''}: max write gap {gap:.3f}s, "
          f"hactl list {min(lists):.2f}/{statistics.median(lists):.2f}/{max(lists):.2f}s")
    assert gap < 1.0, result
    assert statistics.median(lists) < 1.0, result
    return result


def test_leader_keeps_its_lock_when_its_etcd_member_is_killed_or_frozen(setup):
    c, etcd = setup
    results = []
    for _ in range(ROUNDS):
        for fault in ("kill", "freeze"):
            results.append(_round(c, etcd, fault))
            c.wait_healthy(timeout=60)
    for fault in ("kill", "freeze"):
        gaps = sorted(r["write_gap"] for r in results if r["fault"] == fault)
        lists = sorted(r["list_max"] for r in results if r["fault"] == fault)
        print(f"{fault}: {len(gaps)} rounds, write gap min/median/max {gaps[0]:.3f}/{statistics.median(gaps):.3f}/"
              f"{gaps[-1]:.3f}s, slowest hactl list min/median/max {lists[0]:.2f}/{statistics.median(lists):.2f}/"
              f"{lists[-1]:.2f}s")
