"""A synchronous standby hands its role over before its PostgreSQL stops (graceful agent stop) or restarts
(`POST /restart`): the `sync` key names the other replica before the standby's postmaster goes away, so in strict
mode the writers never wait for a standby that is leaving, and the standby comes back as a candidate.

One 3-node cluster, `synchronous_mode: true` + `synchronous_mode_strict`, loop_wait 5 (so that a leader that only
noticed on its next tick would make commits wait for seconds). HACTL_HANDOFF_ROUNDS=N repeats each scenario.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import urllib.request

import pytest

from tests.support.agents import AgentCluster, running_cluster
from tests.support.procs import wait_for
from tests.support.writers import Writers, create_table

pytestmark = pytest.mark.integration

ROUNDS = range(int(os.environ.get("HACTL_HANDOFF_ROUNDS", "1")))
MAX_WRITE_WAIT = 2.0
_ID_BASES = (n * 10_000_000 for n in itertools.count(1))  # distinct ids for each Writers of the module


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request, ttl=15, loop_wait=5, retry_timeout=3,
                         bootstrap_dcs={"synchronous_mode": True, "synchronous_mode_strict": True}) as c:
        create_table(c, c.leader())
        yield c


def sync_standby(c: AgentCluster) -> str | None:
    raw = c.dcs().get("sync")
    return json.loads(raw).get("sync_standby") if raw else None


def synced(c: AgentCluster) -> tuple[str, str, str]:
    """(leader, sync standby, the other replica) once every node streams and the key names a confirmed standby."""
    for name, node in c.nodes.items():
        if node.proc is None or node.proc.poll() is not None:
            c.start(name)
    c.wait_healthy(timeout=60)
    state: dict = {}

    def ok() -> bool:
        leader, standby = c.leader(), sync_standby(c)
        if not leader or not standby:
            return False
        rows = dict(c.sql(leader, "SELECT application_name, sync_state FROM pg_stat_replication"))
        state.update(leader=leader, standby=standby)
        return rows.get(standby) == "sync"

    wait_for(ok, timeout=30, interval=0.2, what="a confirmed synchronous standby")
    other = next(n for n in c.nodes if n not in (state["leader"], state["standby"]))
    return state["leader"], state["standby"], other


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def watch_handoff(c: AgentCluster, pid: int, other: str, timeline: list, timeout: float = 30
                  ) -> tuple[float | None, float]:
    """Poll until the postmaster `pid` is gone: (when the sync key first named `other`, when pid went away).
    `timeline` gets every change of (sync key, leader's synchronous_standby_names) for a failure's message."""
    moved = None
    deadline = time.monotonic() + timeout
    with c.connect(c.leader() or "node1") as conn:
        while time.monotonic() < deadline:
            now = time.monotonic()
            key = sync_standby(c)
            if moved is None and key == other:
                moved = now
            _note(conn, timeline, now, key)
            if not alive(pid):
                return moved, now
            time.sleep(0.02)
    raise AssertionError(f"postmaster {pid} still running after {timeout}s")


def _note(conn, timeline: list, now: float, key: str | None) -> None:
    try:
        names = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        names = f"? ({type(exc).__name__})"
    if not timeline or timeline[-1][1:] != (key, names):
        timeline.append((round(now, 2), key, names))


def check_candidate_again(c: AgentCluster, name: str) -> None:
    """Back as a candidate: streaming, and no nosync in its member key nor in GET /patroni."""
    wait_for(lambda: c.member(name).get("replication_state") == "streaming", timeout=30, what=f"{name} to stream")
    assert "nosync" not in (c.member(name).get("tags") or {}), c.member(name)
    status, body = c.rest(name)
    assert status == 200 and "nosync" not in (body.get("tags") or {}), body


def check_write_wait(writers: Writers, t0: float, gone: float, other: str, timeline: list) -> float:
    """No write waited MAX_WRITE_WAIT during the hand-off; returns the longest wait.

    This also holds the leader to its part: after synchronous_standby_names moves to another standby, commits
    already waiting are released only by that standby's next reply, which needs new WAL; the leader writes a little
    after each change (ctl/agent/sync.py), else every writer would wait for the status interval (up to 10 s).
    """
    gap = writers.gap(t0)
    assert gap is not None, f"no writes acknowledged; {writers.errors()}"
    assert gap < MAX_WRITE_WAIT, f"writes waited {gap}s; {writers.errors()}; t0 {t0:.2f}, gone {gone:.2f}, " \
        f"key/ssn {timeline}"
    return gap


def restart(c: AgentCluster, name: str) -> int:
    req = urllib.request.Request(c.nodes[name].api + "/restart", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("round_", ROUNDS)
def test_a_stopping_sync_standby_hands_over_before_postgres_stops(cluster: AgentCluster, round_: int):
    leader, standby, other = synced(cluster)
    pid = cluster.postmaster_pid(standby)
    assert pid
    timeline: list = []
    with Writers(cluster, n=2, id_base=next(_ID_BASES)) as writers:
        time.sleep(0.5)
        t0 = time.monotonic()
        cluster.kill_agent(standby, signal.SIGTERM)
        moved, gone = watch_handoff(cluster, pid, other, timeline)
        time.sleep(1.0)  # writes go on after the stop
    assert moved is not None and moved < gone, \
        f"the sync key did not name {other} before the postmaster went away (named it: {moved}, gone: {gone}, " \
        f"key/ssn {timeline})"
    gap = check_write_wait(writers, t0, gone, other, timeline)
    assert cluster.leader() == leader
    cluster.nodes[standby].proc.wait(timeout=30)
    print(f"\nround {round_}: SIGTERM of {standby}: sync key -> {other} {gone - moved:.2f}s before its postmaster "
          f"went away, {gone - t0:.2f}s after the signal; longest write wait {gap:.3f}s")
    cluster.start(standby)
    check_candidate_again(cluster, standby)


@pytest.mark.parametrize("round_", ROUNDS)
def test_a_restarting_sync_standby_hands_over_and_comes_back_as_a_candidate(cluster: AgentCluster, round_: int):
    leader, standby, other = synced(cluster)
    pid = cluster.postmaster_pid(standby)
    assert pid
    result: dict = {}
    timeline: list = []
    with Writers(cluster, n=2, id_base=next(_ID_BASES)) as writers:
        time.sleep(0.5)
        t0 = time.monotonic()
        t = threading.Thread(target=lambda: result.update(status=restart(cluster, standby)), daemon=True)
        t.start()
        moved, gone = watch_handoff(cluster, pid, other, timeline)
        t.join(timeout=60)
        time.sleep(0.5)
    assert result.get("status") == 200, result
    assert moved is not None and moved < gone, \
        f"the sync key did not name {other} before the postmaster went away (named it: {moved}, gone: {gone}, " \
        f"key/ssn {timeline})"
    gap = check_write_wait(writers, t0, gone, other, timeline)
    assert cluster.leader() == leader and cluster.postmaster_pid(standby) not in (None, pid)
    print(f"\nround {round_}: POST /restart of {standby}: sync key -> {other} {gone - moved:.2f}s before its "
          f"postmaster went away, {gone - t0:.2f}s after the request; longest write wait {gap:.3f}s")
    check_candidate_again(cluster, standby)
