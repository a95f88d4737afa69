"""A real 3-node cluster of hactl agents: bootstrap, replication, failover on crash and on stop, fencing, and a
leader cut off from etcd. One cluster for the module; every test starts from, and leaves, a healthy cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.agents import REPO, AgentCluster, running_cluster
from tests.support.patroni import clean_env, patronictl_exe
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request) as c:
        yield c


@pytest.fixture(scope="module")
def patronictl() -> str:
    return patronictl_exe()


@pytest.fixture
def healthy(cluster: AgentCluster) -> str:
    """Every node's agent running, a leader, two streaming replicas; returns the leader's name."""
    return cluster.heal(timeout=120)


class WriteProbe:
    """Writes to every node every 100 ms and records which nodes accepted a write in each round."""

    def __init__(self, cluster: AgentCluster) -> None:
        self.cluster = cluster
        self.rounds: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._conns: dict[str, object] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _write(self, name: str) -> bool:
        try:
            conn = self._conns.get(name)
            if conn is None or conn.closed:
                conn = self.cluster.connect(name, timeout=1)
                self._conns[name] = conn
            conn.execute("INSERT INTO probe(node, at) VALUES (%s, clock_timestamp())", (name,))
            return True
        except Exception:  # noqa: BLE001 - refused, read-only, down: not writable
            conn = self._conns.pop(name, None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = {n for n in self.cluster.nodes if self._write(n)}
            self.rounds.append((started, ok))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def __enter__(self) -> "WriteProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def assert_never_two_writable(self) -> None:
        both = [(t, nodes) for t, nodes in self.rounds if len(nodes) > 1]
        assert not both, f"two writable primaries at once: {both[:3]}"


def test_bootstrap_one_leader_two_streaming_replicas_and_rows_replicate(cluster: AgentCluster, healthy: str):
    leader = healthy
    replicas = sorted(set(cluster.nodes) - {leader})
    assert cluster.streaming() == set(replicas)
    cluster.sql(leader, "CREATE TABLE IF NOT EXISTS probe (node text, at timestamptz)")
    cluster.sql(leader, "CREATE TABLE IF NOT EXISTS t (id int)")
    cluster.sql(leader, "INSERT INTO t VALUES (1), (2), (3)")
    for r in replicas:
        wait_for(lambda r=r: cluster.sql(r, "SELECT count(*) FROM t")[0][0] == 3, timeout=10, what=f"rows on {r}")
        assert cluster.sql(r, "SELECT pg_is_in_recovery()")[0][0] is True
    keys = cluster.dcs()
    assert keys["leader"] == leader
    assert keys["initialize"].isdigit()
    member = cluster.member(leader)
    assert member["role"] == "primary" and member["state"] == "running"
    assert member["conn_url"] == f"postgres://127.0.0.1:{cluster.nodes[leader].pg_port}/postgres"
    status, body = cluster.rest(leader, "/patroni")
    assert status == 200 and body["role"] == "primary"
    assert cluster.rest(leader, "/leader")[0] == 200
    assert cluster.rest(replicas[0], "/leader")[0] == 503
    assert cluster.rest(replicas[0], "/replica")[0] == 200


def test_real_patronictl_sees_the_hactl_cluster(cluster: AgentCluster, healthy: str, patronictl: str):
    """Compatibility: Patroni's own patronictl reads the keys and REST API of hactl agents."""
    env = clean_env()
    node1 = cluster.nodes["node1"].config_path
    proc = subprocess.run([patronictl, "-c", node1, "list", "-f", "json"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["Member"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(cluster.nodes)
    assert rows[healthy]["Role"] == "Leader" and rows[healthy]["State"] == "running"
    for name in set(cluster.nodes) - {healthy}:
        assert rows[name]["Role"] == "Replica" and rows[name]["State"] == "streaming", rows[name]
        assert rows[name]["Host"] == f"127.0.0.1:{cluster.nodes[name].pg_port}"
    proc = subprocess.run([patronictl, "-c", node1, "version", cluster.scope], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    for name in cluster.nodes:
        assert f"{name}: Patroni " in proc.stdout and "PostgreSQL 15" in proc.stdout


def test_graceful_stop_of_the_leader_hands_over_within_seconds(cluster: AgentCluster, healthy: str):
    old = healthy
    cluster.sql(old, "INSERT INTO t VALUES (10)")
    with WriteProbe(cluster) as probe:
        time.sleep(0.5)
        t0 = time.monotonic()
        cluster.kill_agent(old, signal.SIGTERM)
        wait_for(lambda: cluster.leader() not in (None, old), timeout=10, interval=0.05, what="a new leader")
        new = cluster.leader()
        wait_for(lambda: cluster.writable(new), timeout=10, interval=0.05, what=f"{new} writable")
        took = time.monotonic() - t0
        cluster.nodes[old].proc.wait(30)
    probe.assert_never_two_writable()
    assert took < 6, f"new leader writable only after {took:.1f}s"
    assert cluster.sql(new, "SELECT count(*) FROM t WHERE id = 10")[0][0] == 1
    cluster.start(old)
    wait_for(lambda: cluster.member(old).get("replication_state") == "streaming", timeout=60,
             what=f"{old} streaming again")


def test_crash_of_leader_agent_and_postmaster_fails_over_and_old_leader_rejoins(cluster: AgentCluster,
                                                                                 healthy: str):
    old = healthy
    cluster.sql(old, "INSERT INTO t VALUES (20)")
    time.sleep(1.5)  # let the replicas receive it and the leader publish its optime
    with WriteProbe(cluster) as probe:
        time.sleep(0.3)
        t0 = time.monotonic()
        cluster.crash(old)
        wait_for(lambda: cluster.leader() not in (None, old), timeout=cluster.ttl + 10, interval=0.05,
                 what="a new leader")
        new = cluster.leader()
        wait_for(lambda: cluster.writable(new), timeout=10, interval=0.05, what=f"{new} writable")
        took = time.monotonic() - t0
    probe.assert_never_two_writable()
    assert took <= cluster.ttl + 2, f"writable after {took:.1f}s, ttl {cluster.ttl}"
    assert cluster.sql(new, "SELECT count(*) FROM t WHERE id = 20")[0][0] == 1
    # diverge the timelines for real: the new leader writes, then the old node comes back and must rewind
    cluster.sql(new, "INSERT INTO t VALUES (21)")
    cluster.nodes[old].proc.wait(10)
    cluster.start(old)
    wait_for(lambda: cluster.member(old).get("replication_state") == "streaming", timeout=90,
             what=f"{old} rejoined as a streaming replica")
    wait_for(lambda: cluster.sql(old, "SELECT count(*) FROM t WHERE id = 21")[0][0] == 1, timeout=10,
             what="new rows on the rejoined node")
    with open(cluster.nodes[old].log_path, encoding="utf-8") as f:
        assert "pg_rewind" in f.read()


def test_switchover_requested_through_the_failover_key(cluster: AgentCluster, healthy: str):
    old = healthy
    candidate = sorted(set(cluster.nodes) - {old})[0]
    cluster.sql(old, "INSERT INTO t SELECT generate_series(100, 199)")
    with WriteProbe(cluster) as probe:
        time.sleep(0.5)
        t0 = time.monotonic()
        cluster.put_key("failover", json.dumps({"leader": old, "member": candidate}))
        wait_for(lambda: cluster.leader() == candidate and cluster.writable(candidate), timeout=15, interval=0.05,
                 what=f"{candidate} leading and writable")
        took = time.monotonic() - t0
        time.sleep(0.5)
    probe.assert_never_two_writable()
    assert took < 5, f"switchover took {took:.1f}s"
    assert cluster.sql(candidate, "SELECT count(*) FROM t WHERE id BETWEEN 100 AND 199")[0][0] == 100
    wait_for(lambda: cluster.dcs().get("failover") in (None, "{}"), timeout=10, what="the failover key cleared")
    wait_for(lambda: cluster.member(old).get("replication_state") == "streaming", timeout=60,
             what=f"{old} following {candidate}")
    history = json.loads(cluster.dcs()["history"])
    assert history[-1][4] == candidate


def hactl(cluster: AgentCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", "-c", cluster.nodes["node1"].config_path, *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)


def test_edit_config_reaches_every_agent(cluster: AgentCluster, healthy: str):
    done = hactl(cluster, "edit-config", "--set", "loop_wait=2", "--pg", "work_mem=8MB", "--pg",
                 "max_connections=40", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in cluster.nodes:
        wait_for(lambda n=name: cluster.sql(n, "SHOW work_mem")[0][0] == "8MB", timeout=10,
                 what=f"work_mem reloaded on {name}")
        wait_for(lambda n=name: cluster.member(n).get("pending_restart") is True, timeout=10,
                 what=f"pending restart published by {name}")
        reason = cluster.member(name)["pending_restart_reason"]
        assert reason["max_connections"]["new_value"] == "40", reason
        with open(cluster.nodes[name].log_path, encoding="utf-8") as f:
            assert "now in effect: ttl 8, loop_wait 2," in f.read()
    listed = hactl(cluster, "list")
    assert "max_connections: 30->40" in listed.stdout, listed.stdout
    # a bad value written by another tool (Patroni's edit-config validates nothing) is ignored and logged once
    config = json.loads(cluster.dcs()["config"])
    config["loop_wait"] = "abc"
    config["postgresql"]["parameters"]["work_mem"] = "lots"
    cluster.put_key("config", json.dumps(config))
    time.sleep(4)
    for name in cluster.nodes:
        assert cluster.sql(name, "SHOW work_mem")[0][0] == "8MB"
        with open(cluster.nodes[name].log_path, encoding="utf-8") as f:
            assert f.read().count("ignoring invalid dynamic config") == 1
        assert cluster.rest(name, "/liveness")[0] == 200
    done = hactl(cluster, "edit-config", "--set", "loop_wait=1", "--pg", "work_mem=16MB", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in cluster.nodes:
        wait_for(lambda n=name: cluster.sql(n, "SHOW work_mem")[0][0] == "16MB", timeout=10,
                 what=f"the next good config applied on {name}")


def test_agent_killed_alone_fences_its_postgres(cluster: AgentCluster, healthy: str):
    old = healthy
    pm = cluster.postmaster_pid(old)
    assert pm
    cluster.kill_agent(old, signal.SIGKILL)
    # the postmaster must not outlive its agent: no writes once another node may be promoted
    wait_for(lambda: not cluster.writable(old), timeout=3, interval=0.05, what=f"{old}'s postgres to stop")
    wait_for(lambda: cluster.leader() not in (None, old), timeout=cluster.ttl + 10, what="a new leader")
    assert not cluster.writable(old)


def test_leader_cut_off_from_etcd_demotes_before_its_lease_expires(cluster: AgentCluster, healthy: str):
    old = healthy
    with WriteProbe(cluster) as probe:
        time.sleep(0.5)
        cut_at = time.monotonic()
        cluster.nodes[old].proxy.cut()
        wait_for(lambda: not cluster.writable(old), timeout=cluster.ttl, interval=0.05,
                 what=f"{old} to stop accepting writes")
        demoted_after = time.monotonic() - cut_at
        wait_for(lambda: cluster.leader() not in (None, old), timeout=cluster.ttl + 10, interval=0.1,
                 what="a new leader")
        new = cluster.leader()
        wait_for(lambda: cluster.writable(new), timeout=10, interval=0.05, what=f"{new} writable")
        time.sleep(0.5)
    cluster.nodes[old].proxy.restore()
    probe.assert_never_two_writable()
    assert demoted_after < cluster.ttl, f"demoted {demoted_after:.1f}s after the cut, ttl {cluster.ttl}"
    wait_for(lambda: cluster.member(old).get("replication_state") == "streaming", timeout=90,
             what=f"{old} back as a streaming replica")
