"""What operators wire Patroni into, on real etcd, PostgreSQL and agents: callbacks, a standby cluster replicating
from this one (with promote-cluster / demote-cluster), and failsafe mode with etcd frozen.

One 3-node cluster A for the module (callbacks configured on every node); the standby cluster B (2 nodes) lives
on the same etcd under another scope; the failsafe tests come last because they freeze etcd.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration.test_agent_cluster import WriteProbe
from tests.support.agents import REPO, AgentCluster, running_cluster
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

CALLBACK = """#!/bin/sh
# <node> <action> <role> <scope>: the last three arguments, as Patroni's own test harness reads them
shift $(($# - 4))
echo "$*" >> {out}
"""


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("callbacks")
    out = base / "callbacks.log"
    script = base / "callback.sh"
    script.write_text(CALLBACK.format(out=out))
    script.chmod(0o755)
    os.chmod(base, 0o755)
    original = AgentCluster.add_node

    def add_node(self, name, tags=None, use_pg_rewind=True, **kw):
        return original(self, name, tags, use_pg_rewind, extra={"postgresql": {"callbacks": {
            a: f"{script} {name}" for a in ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")}}})

    AgentCluster.add_node = add_node  # cluster A's nodes only: restored once they are added
    try:
        # ttl 8 (loop_wait 1, retry_timeout 3): etcd may freeze at any point of an iteration, and the failsafe
        # exchange still runs after the first failed call, well before its answers are due (ttl - retry_timeout)
        with running_cluster(request, ttl=8) as c:
            AgentCluster.add_node = original
            c.callback_log = out  # type: ignore[attr-defined]
            c.callback_script = script  # type: ignore[attr-defined]
            yield c
    finally:
        AgentCluster.add_node = original


def lines(c: AgentCluster) -> list[str]:
    path = c.callback_log  # type: ignore[attr-defined]
    return path.read_text().splitlines() if path.exists() else []


def rest(c: AgentCluster, name: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(c.nodes[name].api + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def hactl(config_path: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", "-c", config_path, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO)


def wait_lines(c: AgentCluster, start: int, count: int, timeout: float = 20) -> list[str]:
    wait_for(lambda: len(lines(c)) >= start + count, timeout=timeout, interval=0.1,
             what=f"{count} callback lines (have {lines(c)[start:]})")
    time.sleep(1.5)  # and no more than that
    return lines(c)[start:]


# ------------------------------------------------------------------------------------------------ callbacks


def test_callbacks_at_bootstrap(cluster: AgentCluster):
    scope = cluster.scope
    got = wait_lines(cluster, 0, 3)
    assert got[0] == f"node1 on_start primary {scope}"
    assert sorted(got[1:]) == [f"node2 on_start replica {scope}", f"node3 on_start replica {scope}"]


def test_callbacks_on_switchover_both_sides(cluster: AgentCluster):
    scope = cluster.scope
    old = cluster.wait_healthy()
    new, other = sorted(set(cluster.nodes) - {old})
    start = len(lines(cluster))
    code, body = rest(cluster, old, "POST", "/switchover", {"leader": old, "candidate": new})
    assert code == 200, body
    got = wait_lines(cluster, start, 4, timeout=60)
    assert sorted(got) == sorted([f"{old} on_stop demoted {scope}", f"{new} on_role_change primary {scope}",
                                  f"{other} on_reload replica {scope}", f"{old} on_role_change replica {scope}"])
    assert got.index(f"{old} on_stop demoted {scope}") < got.index(f"{new} on_role_change primary {scope}")
    assert got.index(f"{old} on_stop demoted {scope}") < got.index(f"{old} on_role_change replica {scope}")
    cluster.wait_healthy()


def test_callbacks_on_restart_and_reload(cluster: AgentCluster):
    scope = cluster.scope
    leader = cluster.wait_healthy()
    replica = sorted(set(cluster.nodes) - {leader})[0]
    start = len(lines(cluster))
    code, body = rest(cluster, replica, "POST", "/restart", {})
    assert code == 200, body
    assert wait_lines(cluster, start, 1) == [f"{replica} on_restart replica {scope}"]
    start = len(lines(cluster))
    code, body = rest(cluster, leader, "POST", "/reload")
    assert code == 202, body
    assert wait_lines(cluster, start, 1) == [f"{leader} on_reload primary {scope}"]


# ------------------------------------------------------------------------------------------------ standby cluster


@pytest.fixture(scope="module")
def standby(request, cluster: AgentCluster):
    """Cluster B: two agents on the same etcd (another scope) replicating from cluster A's leader."""
    leader = cluster.wait_healthy()
    cluster.sql(leader, "CREATE TABLE IF NOT EXISTS dr(id int)")
    b = AgentCluster(cluster.etcd)
    section = {"host": "127.0.0.1", "port": cluster.nodes[leader].pg_port}
    for name in ("b1", "b2"):
        b.add_node(name, extra={"bootstrap": {"dcs": {"standby_cluster": section}}, "postgresql": {"callbacks": {
            "on_role_change": f"{cluster.callback_script} {name}"}}})  # type: ignore[attr-defined]
    b.remote_leader = leader  # type: ignore[attr-defined]
    cluster.standby_b = b  # type: ignore[attr-defined]  # the failsafe tests stop it before freezing etcd
    try:
        b.start("b1")
        wait_for(lambda: b.leader() == "b1", timeout=90, what="b1 to become the standby leader")
        b.start("b2")
        wait_for(lambda: b.streaming() >= {"b1", "b2"}, timeout=90, what="b1 and b2 streaming")
    except Exception:
        print("\n" + b.logs())
        b.cleanup()
        raise
    try:
        yield b
    finally:
        if request.session.testsfailed:
            print("\n" + b.logs())
        b.cleanup()


def test_standby_cluster_replicates_and_is_read_only(cluster: AgentCluster, standby: AgentCluster):
    a_leader = standby.remote_leader  # type: ignore[attr-defined]
    assert standby.member("b1")["role"] == "standby_leader"
    assert standby.rest("b1", "/standby-leader")[0] == 200
    assert standby.rest("b1", "/primary")[0] == 503
    assert standby.rest("b2", "/standby-leader")[0] == 503
    code, body = standby.rest("b1", "/cluster")
    assert [(m["name"], m["role"]) for m in body["members"]] == [("b1", "standby_leader"), ("b2", "replica")]
    cluster.sql(a_leader, "INSERT INTO dr VALUES (1)")
    for name in ("b1", "b2"):
        wait_for(lambda: _count(standby, name, "SELECT count(*) FROM dr WHERE id = 1") == 1, timeout=30,
                 what=f"the row on {name}")
        assert not standby.writable(name)
    out = hactl(standby.nodes["b1"].config_path, "list").stdout
    b1 = next(line for line in out.splitlines() if "| b1 " in line)
    assert "| Standby Leader | streaming |" in b1, out


def test_real_patronictl_shows_the_standby_leader_as_hactl_does(standby: AgentCluster):
    from tests.support.patroni import clean_env, patronictl_exe

    exe, cfg = patronictl_exe(), standby.nodes["b1"].config_path
    for args in (["list"], ["topology"], ["list", "-f", "tsv"]):
        for _ in range(5):  # the two reads may straddle a WAL position change on the remote
            theirs = subprocess.run([exe, "-c", cfg, *args], capture_output=True, text=True, timeout=60,
                                    env=clean_env())
            ours = hactl(cfg, *args)
            if ours.stdout == theirs.stdout:
                break
            time.sleep(0.5)
        assert ours.stdout == theirs.stdout, (args, ours.stdout, theirs.stdout)
        assert "Standby Leader" in theirs.stdout


def _count(c: AgentCluster, name: str, query: str) -> int | None:
    try:
        return c.sql(name, query)[0][0]
    except Exception:  # noqa: BLE001 - table not replicated yet
        return None


ROUNDS = range(int(os.environ.get("HACTL_OPS_ROUNDS", "1")))  # repeat the HA scenarios on one cluster


@pytest.mark.parametrize("round_", ROUNDS)
def test_killing_the_standby_leader_moves_standby_leadership(cluster: AgentCluster, standby: AgentCluster,
                                                              round_: int):
    a_leader = standby.remote_leader  # type: ignore[attr-defined]
    old = standby.leader()
    new = next(n for n in standby.nodes if n != old)
    wait_for(lambda: standby.member(new).get("replication_state") == "streaming", timeout=60,
             what=f"{new} streaming before the kill")
    start = len(lines(cluster))
    t0 = time.monotonic()
    standby.crash(old)
    wait_for(lambda: standby.leader() == new and standby.member(new).get("role") == "standby_leader",
             timeout=standby.ttl + 20, interval=0.1, what=f"{new} standby leader")
    took = time.monotonic() - t0
    cluster.sql(a_leader, "INSERT INTO dr VALUES (%s)", (100 + round_,))
    wait_for(lambda: _count(standby, new, f"SELECT count(*) FROM dr WHERE id = {100 + round_}") == 1, timeout=30,
             what=f"a new row on {new}")
    assert not standby.writable(new)
    assert f"{new} on_role_change standby_leader {standby.scope}" in lines(cluster)[start:]
    standby.start(old)
    wait_for(lambda: standby.member(old).get("replication_state") == "streaming", timeout=60,
             what=f"{old} following {new}")
    assert not standby.writable(old)
    print(f"\nstandby failover round {round_}: {new} standby leader {took:.1f}s after the kill of {old}")


def test_promote_cluster_then_demote_cluster(cluster: AgentCluster, standby: AgentCluster):
    a_leader = standby.remote_leader  # type: ignore[attr-defined]
    cfg = standby.nodes["b1"].config_path
    r = hactl(cfg, "promote-cluster", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    lead = standby.leader()
    assert standby.writable(lead)
    assert "standby_cluster" not in json.loads(standby.dcs()["config"])
    standby.sql(lead, "CREATE TABLE b_only(id int)")
    wait_for(lambda: standby.member(next(iter(set(standby.nodes) - {lead})))
             .get("replication_state") == "streaming", timeout=60, what="the other member following")
    r = hactl(cfg, "demote-cluster", "--host", "127.0.0.1", "--port", str(cluster.nodes[a_leader].pg_port),
              "--force", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    lead = standby.leader()
    assert standby.member(lead)["role"] == "standby_leader"
    cluster.sql(a_leader, "INSERT INTO dr VALUES (3)")
    for name in standby.nodes:
        wait_for(lambda: _count(standby, name, "SELECT count(*) FROM dr WHERE id = 3") == 1, timeout=60,
                 what=f"A's new row on {name}")
        assert not standby.writable(name)


def test_removing_standby_cluster_with_edit_config_promotes(cluster: AgentCluster, standby: AgentCluster):
    cfg = standby.nodes["b1"].config_path
    r = hactl(cfg, "edit-config", "--force", "-s", "standby_cluster=null")
    assert r.returncode == 0, r.stdout + r.stderr
    lead = standby.leader()
    wait_for(lambda: standby.writable(lead), timeout=15, interval=0.1, what=f"{lead} writable")
    standby.sql(lead, "INSERT INTO dr VALUES (4)")


# ------------------------------------------------------------------------------------------------ failsafe


@pytest.fixture(scope="module")
def failsafe(cluster: AgentCluster):
    b = getattr(cluster, "standby_b", None)
    if b is not None:
        b.cleanup()  # frozen etcd would only disturb the standby cluster; its tests are done
    leader = cluster.wait_healthy()
    code, body = rest(cluster, leader, "PATCH", "/config", {"failsafe_mode": True})
    assert code == 200, body
    want = json.dumps({n: f"{cluster.nodes[n].api}/patroni" for n in sorted(cluster.nodes)}, separators=(",", ":"))
    wait_for(lambda: cluster.dcs().get("failsafe") == want, timeout=15, what=f"failsafe key {want}")
    cluster.sql(leader, "CREATE TABLE IF NOT EXISTS probe(node text, at timestamptz)")
    return cluster


def _freeze(c: AgentCluster) -> None:
    os.kill(c.etcd.proc.pid, signal.SIGSTOP)


def _leader_revision(c: AgentCluster) -> int:
    import base64

    key = (c.namespace.rstrip("/") + "/" + c.scope + "/leader").encode()
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    req = urllib.request.Request(c.etcd.url + "/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=3) as r:
        kvs = json.loads(r.read()).get("kvs", [])
    return int(kvs[0]["mod_revision"]) if kvs else 0


def _freeze_after_renewal(c: AgentCluster) -> None:
    """Freeze etcd a few ms after the leader renewed its lock: in the middle of its iteration, before its lease
    keepalive and member key update (the case where a DCS call fails after the read succeeded)."""
    first = _leader_revision(c)
    deadline = time.monotonic() + 10
    while _leader_revision(c) == first and time.monotonic() < deadline:
        pass
    _freeze(c)


MID_ITERATION = "etcd stopped answering during this iteration"  # the agent's DCS-error path (ctl/agent/loop.py)


def _log_count(c: AgentCluster, name: str, text: str) -> int:
    with open(c.nodes[name].log_path, encoding="utf-8", errors="replace") as f:
        return f.read().count(text)


def _write_gap(probe: WriteProbe, name: str, since: float) -> float:
    """The longest time between two writes `name` accepted, from `since` on."""
    times = [t for t, ok in probe.rounds if name in ok and t >= since]
    return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


def _thaw(c: AgentCluster) -> None:
    os.kill(c.etcd.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("round_", ROUNDS)
def test_failsafe_leader_keeps_writing_while_every_member_is_up(failsafe: AgentCluster, round_: int):
    c = failsafe
    leader = c.wait_healthy()
    assert rest(c, leader, "POST", "/failsafe", {"name": "x"})[0] == 500  # "Running as a leader"
    mid_iteration = round_ % 2 == 0  # odd rounds: etcd freezes wherever the leader's loop happens to be
    with WriteProbe(c) as probe:
        time.sleep(0.5)
        mid_path = _log_count(c, leader, MID_ITERATION)
        t0 = time.monotonic()
        if mid_iteration:
            _freeze_after_renewal(c)
        else:
            _freeze(c)
        try:
            while time.monotonic() - t0 < 2 * c.ttl:
                assert c.writable(leader), f"{leader} stopped accepting writes {time.monotonic() - t0:.1f}s in"
                time.sleep(0.2)
            code, body = c.rest(leader, "/patroni")
            assert body.get("failsafe_mode_is_active") is True and body["role"] == "primary"
        finally:
            _thaw(c)
        wait_for(lambda: c.leader() == leader, timeout=30, what=f"{leader} holding the lock again")
        time.sleep(1)
    probe.assert_never_two_writable()
    assert c.wait_healthy() == leader
    mid_path = _log_count(c, leader, MID_ITERATION) > mid_path
    with open(c.nodes[leader].log_path, encoding="utf-8", errors="replace") as f:
        asked = re.findall(r"accepted POST /failsafe in \S+, asked (\S+) after", f.read())[-1:]
    print(f"\nfailsafe round {round_} ({'after a renewal' if mid_iteration else 'anywhere'}): {leader} kept "
          f"writing, longest write gap {_write_gap(probe, leader, t0):.2f}s; "
          f"{'a call after the read failed first' if mid_path else 'the read failed first'}; "
          f"members asked {''.join(asked)} after the last renewal")


@pytest.mark.parametrize("round_", ROUNDS)
def test_failsafe_leader_cut_off_etcd_alone_keeps_writing_and_no_replica_takes_over(failsafe: AgentCluster,
                                                                                   round_: int):
    """Only the primary loses etcd: its lease, and the leader key, expire after ttl while the replicas still see
    etcd; they keep following it because it POSTs /failsafe to them (Patroni's rule), and it takes the lock again
    once it reaches etcd."""
    c = failsafe
    leader = c.wait_healthy()
    with WriteProbe(c) as probe:
        time.sleep(0.5)
        t0 = time.monotonic()
        c.nodes[leader].proxy.cut()
        try:
            wait_for(lambda: c.leader() is None, timeout=2 * c.ttl, interval=0.1, what="the leader key to expire")
            expired = time.monotonic() - t0
            while time.monotonic() - t0 < expired + c.ttl:  # a whole ttl after the lease is gone: nobody races
                assert c.writable(leader), f"{leader} stopped accepting writes {time.monotonic() - t0:.1f}s in"
                time.sleep(0.2)
            assert c.leader() is None
        finally:
            c.nodes[leader].proxy.restore()
        wait_for(lambda: c.leader() == leader, timeout=30, what=f"{leader} holding the lock again")
        time.sleep(1)
    probe.assert_never_two_writable()
    assert c.wait_healthy() == leader
    print(f"\nfailsafe round {round_} (leader cut off etcd alone): leader key gone {expired:.1f}s after the cut, "
          f"{leader} kept writing, longest write gap {_write_gap(probe, leader, t0):.2f}s")


@pytest.mark.parametrize("round_", ROUNDS)
def test_failsafe_leader_demotes_when_a_member_is_unreachable(failsafe: AgentCluster, round_: int):
    c = failsafe
    leader = c.wait_healthy()
    lost = sorted(set(c.nodes) - {leader})[0]
    with WriteProbe(c) as probe:
        time.sleep(0.5)
        _freeze(c)
        c.kill_agent(lost, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            wait_for(lambda: not c.writable(leader), timeout=c.ttl, interval=0.05, what=f"{leader} to demote")
            took = time.monotonic() - t0
        finally:
            _thaw(c)
            c.kill_agent(lost, signal.SIGCONT)
        c.wait_healthy(timeout=120)
        time.sleep(0.5)
    probe.assert_never_two_writable()
    assert took < c.ttl, f"demoted {took:.1f}s after etcd froze, ttl {c.ttl}"
    print(f"\nfailsafe round {round_}: {leader} demoted {took:.1f}s after etcd froze with {lost} stopped")
