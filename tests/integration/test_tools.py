"""The operator's tools on one real 3-node cluster of hactl agents: plan, check, list --all, audit, drill.

One cluster for the module; each test leaves it healthy (the `healthy` fixture restarts what a test stopped).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ctl.errors import ExitCode
from tests.support.agents import REPO, SUPERUSER_PASSWORD, AgentCluster, running_cluster
from tests.support.patroni import clean_env, patronictl_exe
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration
LAG = re.compile(r"lags [0-9.]+ MB behind \(maximum_lag_on_failover 1\.0 MB\)")


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request) as c:
        yield c


@pytest.fixture
def healthy(cluster: AgentCluster) -> str:
    return cluster.heal(timeout=120, no_failover_key=True)


def hactl(cluster: AgentCluster, *args: str, timeout: float = 120, env: dict | None = None
          ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", "-c", cluster.nodes["node1"].config_path, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, cwd=REPO,
                          env=env or clean_env())


def _replicas(cluster: AgentCluster, leader: str) -> list[str]:
    return sorted(set(cluster.nodes) - {leader})


class _Lagging:
    """One replica's WAL receiver stopped (SIGSTOP) and 3 MB written on the leader: it lags past 1 MB."""

    def __init__(self, cluster: AgentCluster, leader: str, name: str) -> None:
        self.cluster, self.leader, self.name = cluster, leader, name
        self.pid = cluster.sql(name, "SELECT pid FROM pg_stat_wal_receiver")[0][0]

    def __enter__(self) -> "_Lagging":
        os.kill(self.pid, signal.SIGSTOP)
        self.cluster.sql(self.leader, "CREATE TABLE IF NOT EXISTS lagger (x text)")
        self.cluster.sql(self.leader, "INSERT INTO lagger SELECT repeat('x', 1000) FROM generate_series(1, 3000)")
        self.cluster.sql(self.leader, "CHECKPOINT")

        def lagging() -> bool:
            status, body = self.cluster.rest(self.leader)
            _, rbody = self.cluster.rest(self.name)
            if not body or not rbody:
                return False
            rx = rbody.get("xlog", {})
            pos = max(rx.get("received_location", 0), rx.get("replayed_location", 0))
            return body["xlog"]["location"] - pos > 2 * 1048576

        wait_for(lagging, timeout=30, interval=0.3, what=f"{self.name} lagging by 2 MB")
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.cluster.sql(self.leader, "DROP TABLE IF EXISTS lagger")


# ----------------------------------------------------------------------------------------------------- plan


def test_plan_and_a_refused_switchover_and_the_agent_give_the_same_reasons(cluster: AgentCluster, healthy: str):
    leader = healthy
    good, lagging = _replicas(cluster, leader)
    proc = hactl(cluster, "plan", "switchover", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["leader"] == leader and plan["chosen"] in (good, lagging)
    assert {m["member"]: m["eligible"] for m in plan["members"]} == {leader: False, good: True, lagging: True}

    with _Lagging(cluster, leader, lagging):
        proc = hactl(cluster, "plan", "switchover", "--candidate", lagging, "-f", "json")
        assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
        plan = json.loads(proc.stdout)
        row = next(m for m in plan["members"] if m["member"] == lagging)
        assert plan["chosen"] is None and row["eligible"] is False and row["lag_bytes"] > 2 * 1048576
        assert len(row["reasons"]) == 1 and LAG.fullmatch(row["reasons"][0]), row
        pretty = hactl(cluster, "plan", "switchover")
        assert pretty.returncode == 0 and f"Chosen: {good}" in pretty.stdout, pretty.stdout

        # the CLI refuses with the same per-member reason, before anything is sent
        proc = hactl(cluster, "switchover", "--candidate", lagging, "--force")
        assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
        assert f"{lagging}: " + LAG.search(proc.stderr).group(0) in proc.stderr
        # the leader's agent, asked through the failover key directly, refuses by the same rule
        log = cluster.nodes[leader].log_path
        before = os.path.getsize(log)
        cluster.put_key("failover", json.dumps({"leader": leader, "member": lagging}))
        wait_for(lambda: cluster.dcs().get("failover") in (None, "{}", ""), timeout=20, what="failover key cleared")
        with open(log, encoding="utf-8", errors="replace") as f:
            f.seek(before)
            text = f.read()
        refusal = re.search(r"switchover refused: (\S+) (lags [^\n]*?MB\))", text)
        assert refusal is not None, text[-3000:]
        assert refusal.group(1) == lagging and LAG.fullmatch(refusal.group(2))
    assert cluster.leader() == leader


# ---------------------------------------------------------------------------------------------------- check


def test_check_reports_a_stopped_member_and_a_lagging_replica(cluster: AgentCluster, healthy: str):
    leader = healthy
    stopped, lagging = _replicas(cluster, leader)
    proc = hactl(cluster, "check", "-f", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report  # a healthy test cluster has warnings at most (a single etcd member)
    assert report["summary"]["error"] == 0
    assert {f["check"] for f in report["findings"]} >= {"etcd-size", "synchronous-mode"}
    assert hactl(cluster, "check", "--strict").returncode == ExitCode.FINDINGS

    with _Lagging(cluster, leader, lagging):
        cluster.stop_agent(stopped)
        proc = hactl(cluster, "check", "-f", "json")
        report = json.loads(proc.stdout)
        assert proc.returncode == ExitCode.FINDINGS, report
        found = {(f["check"], f["member"]) for f in report["findings"]}
        assert ("rest-unreachable", stopped) in found or ("postgres-down", stopped) in found, found
        assert ("lag", lagging) in found and ("no-candidate", None) in found, found
        pretty = hactl(cluster, "check")
        assert pretty.returncode == ExitCode.FINDINGS and "error(s)" in pretty.stdout

    bad = hactl(cluster, "--dcs-url", "etcd3://127.0.0.1:1/x", "--timeout", "1", "check", cluster.scope)
    assert bad.returncode == ExitCode.DCS_UNAVAILABLE, bad.stderr


# ------------------------------------------------------------------------------------------------ list --all


def test_list_all_shows_every_cluster_in_one_document(cluster: AgentCluster, healthy: str):
    other = cluster.scope + "-other"
    prefix = cluster.namespace.rstrip("/") + "/" + other + "/"
    member = {"conn_url": "postgres://127.0.0.1:1/postgres", "api_url": "http://127.0.0.1:1/patroni",
              "state": "running", "role": "primary", "version": "4.1.5", "xlog_location": 1, "timeline": 1}
    _put_raw(cluster, prefix + "members/solo", json.dumps(member))
    _put_raw(cluster, prefix + "leader", "solo")
    _put_raw(cluster, prefix + "initialize", "1234")
    try:
        proc = hactl(cluster, "list", "--all", "-f", "json")
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)  # one document, not one array per cluster
        assert {(r["Cluster"], r["Member"]) for r in rows} == {(cluster.scope, n) for n in cluster.nodes} | \
            {(other, "solo")}
        yrows = yaml.safe_load(hactl(cluster, "list", "--all", "-f", "yaml").stdout)
        assert len(yrows) == 4 and {r["Cluster"] for r in yrows} == {cluster.scope, other}
        tsv = hactl(cluster, "list", "--all", "-f", "tsv").stdout.splitlines()
        assert tsv[0].split("\t")[:2] == ["Cluster", "Member"] and len(tsv) == 5
        pretty = hactl(cluster, "list", "--all").stdout
        assert "| Cluster" in pretty and other in pretty and cluster.scope in pretty
        assert hactl(cluster, "list", "--all", cluster.scope).returncode == ExitCode.USAGE
    finally:
        _delete_raw(cluster, prefix)


def _put_raw(cluster: AgentCluster, key: str, value: str) -> None:
    import base64
    import urllib.request

    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    with urllib.request.urlopen(urllib.request.Request(cluster.etcd.url + "/v3/kv/put", data=body), timeout=3):
        pass


def _delete_raw(cluster: AgentCluster, prefix: str) -> None:
    import base64
    import urllib.request

    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])
    body = json.dumps({"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}).encode()
    with urllib.request.urlopen(urllib.request.Request(cluster.etcd.url + "/v3/kv/deleterange", data=body),
                                timeout=3):
        pass


# ---------------------------------------------------------------------------------------------------- audit


def test_audit_records_a_switchover_with_reason_and_patronictl_still_lists(cluster: AgentCluster, healthy: str):
    leader = healthy
    target = _replicas(cluster, leader)[0]
    proc = hactl(cluster, "switchover", "--candidate", target, "--force", "--reason", "CHG-42 kernel update",
                 "-f", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = hactl(cluster, "audit", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    mine = [e for e in entries if e["command"] == "switchover" and e["source"] == "hactl"]
    assert mine, entries
    e = mine[-1]
    assert e["reason"] == "CHG-42 kernel update" and e["exit_code"] == 0 and e["result"].startswith("succeeded")
    assert e["args"]["candidate"] == target and e["user"] and e["host"] and e["duration_s"] > 0
    # the new leader's agent recorded its promotion
    wait_for(lambda: any(x["command"] == "promote" and x.get("member") == target
                         for x in json.loads(hactl(cluster, "audit", "-f", "json").stdout)),
             timeout=20, what="the agent's promote entry")
    assert any(k.startswith("hactl/audit/") for k in cluster.dcs())
    # a refused command is recorded too, with its exit code
    hactl(cluster, "switchover", "--candidate", "nosuch", "--force", "--reason", "typo")
    last = json.loads(hactl(cluster, "audit", "-n", "1", "-f", "json").stdout)
    assert len(last) == 1 and last[0]["reason"] == "typo" and last[0]["exit_code"] == ExitCode.REFUSED

    patronictl = patronictl_exe()
    out = subprocess.run([patronictl, "-c", cluster.nodes["node1"].config_path, "list", "-f", "json"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert {r["Member"] for r in json.loads(out.stdout)} == set(cluster.nodes)
    assert {r["Role"] for r in json.loads(out.stdout)} == {"Leader", "Replica"}


def test_audit_records_an_automatic_failover(cluster: AgentCluster, healthy: str):
    leader = healthy
    cluster.crash(leader)
    wait_for(lambda: cluster.leader() not in (None, leader), timeout=60, what="a new leader")
    new = cluster.leader()
    wait_for(lambda: any(x["command"] == "promote" and x.get("member") == new and x["source"] == "agent"
                         for x in json.loads(hactl(cluster, "audit", "-f", "json").stdout)),
             timeout=20, what="the automatic failover in the audit trail")


# ---------------------------------------------------------------------------------------------------- drill


def _probe(cluster: AgentCluster, stop: threading.Event, acks: list[float]) -> None:
    """An independent client: its own multi-host connection, one INSERT every 20 ms, ack times kept."""
    import psycopg

    hosts = ",".join("127.0.0.1" for _ in cluster.nodes)
    ports = ",".join(str(n.pg_port) for n in cluster.nodes.values())
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = psycopg.connect(host=hosts, port=ports, user="postgres", password=SUPERUSER_PASSWORD,
                                       dbname="postgres", target_session_attrs="read-write", connect_timeout=2,
                                       autocommit=True)
            conn.execute("INSERT INTO probe VALUES (now())")
            acks.append(time.monotonic())
        except psycopg.Error:
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(0.02)
    if conn is not None:
        conn.close()


def test_drill_switchover_loses_nothing_and_its_gap_matches_a_probe(cluster: AgentCluster, healthy: str,
                                                                      tmp_path):
    leader = healthy
    refused = hactl(cluster, "drill", "switchover")
    assert refused.returncode == ExitCode.ABORTED and "--force" in refused.stderr
    cluster.sql(leader, "CREATE TABLE IF NOT EXISTS probe (at timestamptz)")
    stop, acks = threading.Event(), []
    t = threading.Thread(target=_probe, args=(cluster, stop, acks), daemon=True)
    t.start()
    time.sleep(1.0)
    try:
        proc = hactl(cluster, "drill", "switchover", "--force", "--record-dir", str(tmp_path), "-f", "json",
                     "--reason", "quarterly drill")
    finally:
        time.sleep(0.5)
        stop.set()
        t.join(10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(proc.stdout)
    assert record["result"] == "succeeded" and record["from"] == leader and record["to"] not in (None, leader)
    assert record["acked_writes"] > 100 and record["lost_acked_writes"] == 0
    assert record["verified_after_s"] is not None and record["passed"] is True
    saved = json.loads(open(record["record"]).read())
    assert saved["write_gap_s"] == record["write_gap_s"] and os.path.dirname(record["record"]) == str(tmp_path)
    probe_gap = max(b - a for a, b in zip(acks, acks[1:]))
    print(f"drill write_gap_s {record['write_gap_s']:.3f}, independent probe {probe_gap:.3f}")
    assert abs(record["write_gap_s"] - probe_gap) <= 0.5, (record["write_gap_s"], probe_gap)
    assert not cluster.sql(record["to"], "SELECT relname FROM pg_class WHERE relname LIKE %s", ("hactl_drill_%",))
    cluster.sql(record["to"], "DROP TABLE IF EXISTS probe")
