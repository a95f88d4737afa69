"""Pause means hands off, the agent's own restart included; outside pause the agent's death stops its PostgreSQL.

A 2-node cluster. In pause, SIGTERM (a `systemctl restart`) or kill -9 of the leader's agent leaves the postmaster
running (same PID), nobody is promoted, and the restarted agent adopts it and holds the lock again; after
`hactl resume` the cluster is healthy. Outside pause, kill -9 of the leader's agent stops its postmaster through
the fence (ctl/pg/fence.py) within a second, and the replica takes over.
HACTL_PAUSE_ROUNDS=N repeats each scenario N times on the same cluster.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from ctl.pg.process import pid_alive
from tests.support.agents import REPO, AgentCluster, running_cluster
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("HACTL_PAUSE_ROUNDS", "1"))


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request, names=("node1", "node2")) as c:
        yield c


def hactl(c: AgentCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", "-c", c.nodes["node1"].config_path, *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)


def _other(c: AgentCluster, name: str) -> str:
    return next(n for n in c.nodes if n != name)


def _log_since(c: AgentCluster, name: str, offset: int) -> str:
    with open(c.nodes[name].log_path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read()


def _agent_restart_in_pause(c: AgentCluster, how: int) -> float:
    """Pause, stop the leader's agent with `how`, start it again, resume; returns the seconds until it held the
    lock again."""
    leader = c.wait_healthy(timeout=90)
    replica = _other(c, leader)
    done = hactl(c, "pause", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: c.member(leader).get("pause") is True, timeout=10, what="the leader saw the pause")
    pm = c.postmaster_pid(leader)
    assert pm and pid_alive(pm)
    offset = os.path.getsize(c.nodes[leader].log_path)
    try:
        if how == signal.SIGTERM:
            c.stop_agent(leader)
        else:
            c.kill_agent(leader, signal.SIGKILL)
            c.nodes[leader].proc.wait(timeout=10)
        time.sleep(1.0)  # a fence would have acted by now
        assert pid_alive(pm), "the postmaster stopped with its agent in pause"
        assert c.writable(leader), "the primary stopped accepting writes in pause"
        stopped = _log_since(c, leader, offset)
        if how == signal.SIGTERM:
            assert "shutting down in pause: leader key not deleted, PostgreSQL left running" in stopped, stopped
        started = time.monotonic()
        c.start(leader)
        wait_for(lambda: c.rest(leader)[1] is not None and c.rest(leader)[1].get("role") in ("primary", "master")
                 and c.leader() == leader and c.member(leader).get("pause") is True,
                 timeout=30, interval=0.1, what="the restarted agent adopted its primary and holds the lock")
        took = time.monotonic() - started
        assert c.postmaster_pid(leader) == pm and pid_alive(pm), "PostgreSQL was restarted"
        wait_for(lambda: f"fence disarmed (pause) for postmaster {pm} (adopted)" in _log_since(c, leader, offset),
                 timeout=10, what="a (disarmed) fence for the adopted postmaster")
        assert not c.writable(replica), "the replica was promoted in pause"
        status, body = c.rest(replica)
        assert status == 200 and body.get("role") == "replica", body
    finally:
        done = hactl(c, "resume", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.wait_healthy(timeout=90) == leader
    assert c.postmaster_pid(leader) == pm
    wait_for(lambda: f"fence armed for postmaster {pm}" in _log_since(c, leader, offset), timeout=10,
             what="fence re-armed after resume")
    return took


def test_pause_sigterm_of_the_agent_keeps_postgres_and_the_restarted_agent_adopts_it(cluster):
    took = [_agent_restart_in_pause(cluster, signal.SIGTERM) for _ in range(ROUNDS)]
    print(f"SIGTERM in pause, {len(took)} rounds: lock held again {min(took):.2f}/{statistics.median(took):.2f}/"
          f"{max(took):.2f}s after the agent's start, postmaster PID unchanged every time")


def test_pause_kill9_of_the_agent_leaves_postgres_running(cluster):
    took = [_agent_restart_in_pause(cluster, signal.SIGKILL) for _ in range(ROUNDS)]
    print(f"kill -9 in pause, {len(took)} rounds: lock held again {min(took):.2f}/{statistics.median(took):.2f}/"
          f"{max(took):.2f}s after the agent's start, postmaster PID unchanged every time")


def test_kill9_of_the_agent_outside_pause_fences_postgres_and_the_replica_takes_over(cluster):
    fenced, takeover = [], []
    for _ in range(ROUNDS):
        c = cluster
        leader = c.wait_healthy(timeout=90)
        replica = _other(c, leader)
        pm = c.postmaster_pid(leader)
        assert pm and pid_alive(pm)
        c.kill_agent(leader, signal.SIGKILL)
        c.nodes[leader].proc.wait(timeout=10)
        t0 = time.monotonic()
        wait_for(lambda: not pid_alive(pm), timeout=1.0, interval=0.005, what="the fenced postmaster gone")
        fenced.append(time.monotonic() - t0)
        wait_for(lambda: c.writable(replica) and c.leader() == replica, timeout=c.ttl + 20, interval=0.1,
                 what=f"{replica} taking over")
        takeover.append(time.monotonic() - t0)
        assert not c.writable(leader)
        c.start(leader)
        c.wait_healthy(timeout=90)
    print(f"kill -9 outside pause, {len(fenced)} rounds: postmaster gone after "
          f"{min(fenced) * 1000:.0f}/{statistics.median(fenced) * 1000:.0f}/{max(fenced) * 1000:.0f} ms, "
          f"replica writable after {min(takeover):.1f}/{statistics.median(takeover):.1f}/{max(takeover):.1f}s")
