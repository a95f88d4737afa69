"""hactl's mutating commands against a real 3-node cluster of hactl agents (etcd + PostgreSQL on 127.0.0.1).

One cluster for the module; every test starts from, and leaves, a healthy cluster (the `healthy` fixture restarts
agents a test killed). Commands run as subprocesses with stdin from /dev/null, as in a CI pipeline.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from ctl.errors import ExitCode
from tests.support.agents import REPO, AgentCluster, running_cluster
from tests.support.patroni import PatroniCluster, clean_env, patronictl_exe
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request) as c:
        c.sql(c.leader(), "CREATE TABLE t (id int)")
        yield c


@pytest.fixture
def healthy(cluster: AgentCluster) -> str:
    return cluster.heal(timeout=120, no_failover_key=True)


def hactl(cluster: AgentCluster, *args: str, config: str | None = None,
          timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    cfg = config or cluster.nodes["node1"].config_path
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ctl", "-c", cfg, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=REPO, env=clean_env())
    return proc, time.monotonic() - t0


def replicas(cluster: AgentCluster, leader: str) -> list[str]:
    return sorted(set(cluster.nodes) - {leader})


def start_times(cluster: AgentCluster) -> dict[str, str]:
    return {n: cluster.rest(n)[1]["postmaster_start_time"] for n in cluster.nodes}


# ----------------------------------------------------------------------------------------------- prompts


def test_non_interactive_without_force_fails_at_once_naming_the_flag(cluster: AgentCluster, healthy: str):
    for args, flag in ((["switchover"], "--force"), (["failover"], "--candidate"),
                       (["restart", cluster.scope], "--force"), (["reload", cluster.scope], "--force"),
                       (["remove", cluster.scope], "--yes-i-am-aware")):
        proc, took = hactl(cluster, *args)
        assert proc.returncode == ExitCode.ABORTED, (args, proc.stdout, proc.stderr)
        assert flag in proc.stderr and "not a terminal" in proc.stderr, proc.stderr
        assert took < 5
    assert cluster.leader() == healthy


# ----------------------------------------------------------------------------------------------- switchover


def test_switchover_to_a_named_candidate_is_verified(cluster: AgentCluster, healthy: str):
    old = healthy
    candidate = replicas(cluster, old)[0]
    cluster.sql(old, "INSERT INTO t SELECT generate_series(1, 500)")
    proc, took = hactl(cluster, "switchover", "--leader", old, "--candidate", candidate, "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("Current cluster topology\n+ Cluster: " + cluster.scope)
    assert f'Successfully switched over to "{candidate}"' in out and "verified in" in out
    # the table after is a fresh read: the candidate is the leader there
    after = out.split("verified in", 1)[1]
    assert any(line.startswith(f"| {candidate} ") and "| Leader " in line for line in after.splitlines()), out
    assert cluster.leader() == candidate and cluster.writable(candidate)
    assert cluster.sql(candidate, "SELECT count(*) FROM t WHERE id BETWEEN 1 AND 500")[0][0] == 500
    wait_for(lambda: cluster.member(old).get("replication_state") == "streaming", timeout=30,
             what=f"{old} following {candidate}")
    assert took < 15, took


def test_switchover_without_candidate_picks_one_and_says_why_json(cluster: AgentCluster, healthy: str):
    old = healthy
    proc, _ = hactl(cluster, "switchover", "--force", "-f", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == "succeeded" and result["ok"] is True and result["exit_code"] == 0
    chosen = result["requested"]["candidate"]
    assert chosen in replicas(cluster, old)
    assert "least lag" in result["requested"]["candidate_chosen_by_hactl"]
    assert "Candidate: " in proc.stderr  # progress goes to stderr with -f json
    assert result["final_roles"][chosen]["role"] == "leader"
    assert result["final_roles"][old]["role"] == "replica"
    assert {"request", "new_leader_writable", "total"} <= set(result["timings"])
    assert cluster.leader() == chosen


def test_refused_switchovers_exit_refused_and_say_why(cluster: AgentCluster, healthy: str):
    proc, _ = hactl(cluster, "switchover", "--candidate", "nosuch", "--force")
    assert proc.returncode == ExitCode.REFUSED
    assert "nosuch does not exist" in proc.stderr
    proc, _ = hactl(cluster, "switchover", "--candidate", healthy, "--force")
    assert proc.returncode == ExitCode.REFUSED and "already the leader" in proc.stderr
    proc, _ = hactl(cluster, "switchover", "--leader", replicas(cluster, healthy)[0], "--force", "-f", "json")
    assert proc.returncode == ExitCode.REFUSED and "is not the leader" in proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "refused"
    assert cluster.leader() == healthy


def test_lagging_candidates_are_refused_with_the_reason(cluster: AgentCluster, healthy: str):
    """Replication cut (replicator may not log in) and 4 MB of WAL written: nobody is close enough to take over."""
    leader = healthy
    cluster.sql(leader, "ALTER ROLE replicator NOLOGIN")
    try:
        cluster.sql(leader, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        cluster.sql(leader, "CREATE TABLE IF NOT EXISTS lagfill (id int, pad text)")
        cluster.sql(leader, "INSERT INTO lagfill SELECT g, repeat('x', 40) FROM generate_series(1, 50000) g")
        time.sleep(2 * cluster.loop_wait + 0.5)  # the leader publishes its new optime
        candidate = replicas(cluster, leader)[0]
        proc, _ = hactl(cluster, "switchover", "--candidate", candidate, "--force")
        assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
        assert "lags" in proc.stderr and "maximum_lag_on_failover" in proc.stderr, proc.stderr
        proc, _ = hactl(cluster, "switchover", "--force")
        assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
        assert "no eligible candidate" in proc.stderr and proc.stderr.count("lags") == 2, proc.stderr
        assert cluster.leader() == leader
    finally:
        cluster.sql(leader, "ALTER ROLE replicator LOGIN")
    cluster.wait_healthy(timeout=60)


def test_scheduled_switchover_fires_and_a_scheduled_one_can_be_flushed(cluster: AgentCluster, healthy: str):
    old = healthy
    candidate = replicas(cluster, old)[0]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(timespec="seconds")
    proc, _ = hactl(cluster, "switchover", "--candidate", candidate, "--scheduled", later, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "Switchover scheduled" in proc.stdout
    listing, _ = hactl(cluster, "list")
    assert " Switchover scheduled at: " in listing.stdout and f"to: {candidate}" in listing.stdout
    proc, _ = hactl(cluster, "flush", cluster.scope, "switchover", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "scheduled switchover deleted" in proc.stdout
    assert json.loads(cluster.dcs().get("failover") or "{}") == {}
    proc, _ = hactl(cluster, "flush", cluster.scope, "switchover", "--force")
    assert proc.returncode == 0 and "No pending scheduled switchover" in proc.stdout

    soon = (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat()
    proc, _ = hactl(cluster, "switchover", "--candidate", candidate, "--scheduled", soon, "--force")
    assert proc.returncode == 0, proc.stderr
    assert cluster.leader() == old
    wait_for(lambda: cluster.leader() == candidate, timeout=20, what=f"the scheduled switchover to {candidate}")
    wait_for(lambda: cluster.writable(candidate), timeout=10, what=f"{candidate} writable")


def test_nofailover_candidate_is_refused_and_unauthenticated_post_gets_401(cluster: AgentCluster, healthy: str):
    """node restarted with nofailover and restapi.authentication; the CLI sends ctl.authentication."""
    target = replicas(cluster, healthy)[-1]
    node = cluster.nodes[target]
    with open(node.config_path, encoding="utf-8") as f:
        original = f.read()
    cfg = yaml.safe_load(original)
    cfg["tags"] = {"nofailover": True}
    cfg["restapi"]["authentication"] = {"username": "admin", "password": "s3cret-op"}
    ctl_cfg = os.path.join(cluster.base, "ctl-auth.yml")
    with open(cluster.nodes["node1"].config_path, encoding="utf-8") as f:
        base = yaml.safe_load(f)
    base["ctl"] = {"authentication": {"username": "admin", "password": "s3cret-op"}}
    with open(ctl_cfg, "w", encoding="utf-8") as f:
        yaml.safe_dump(base, f)
    try:
        cluster.stop_agent(target)
        with open(node.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f)
        cluster.start(target)
        wait_for(lambda: cluster.member(target).get("tags", {}).get("nofailover") is True
                 and cluster.member(target).get("replication_state") == "streaming", timeout=60,
                 what=f"{target} back with nofailover")
        proc, _ = hactl(cluster, "switchover", "--candidate", target, "--force")
        assert proc.returncode == ExitCode.REFUSED, proc.stderr
        assert "tagged as nofailover" in proc.stderr
        req = urllib.request.Request(node.api + "/reload", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=3)
        assert exc.value.code == 401
        proc, _ = hactl(cluster, "reload", cluster.scope, target, "--force")
        assert proc.returncode == ExitCode.REFUSED and "401" in proc.stderr, proc.stdout + proc.stderr
        proc, _ = hactl(cluster, "reload", cluster.scope, target, "--force", config=ctl_cfg)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "s3cret-op" not in proc.stdout + proc.stderr
    finally:
        cluster.stop_agent(target)
        with open(node.config_path, "w", encoding="utf-8") as f:
            f.write(original)
        cluster.start(target)


# ----------------------------------------------------------------------------------------------- failover


def test_failover_with_a_healthy_leader(cluster: AgentCluster, healthy: str):
    candidate = replicas(cluster, healthy)[-1]
    proc, took = hactl(cluster, "failover", "--candidate", candidate, "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'Successfully failed over to "{candidate}"' in proc.stdout
    assert cluster.leader() == candidate


def test_failover_with_the_leader_dead_goes_through_the_failover_key(cluster: AgentCluster, healthy: str):
    old = healthy
    candidate = replicas(cluster, old)[-1]
    cluster.sql(old, "INSERT INTO t VALUES (9999)")
    time.sleep(1.5)
    cluster.crash(old)
    cluster.nodes[old].proc.wait(10)
    proc, took = hactl(cluster, "failover", "--candidate", candidate, "--force", "-f", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert "falling back to DCS" in proc.stderr and any("falling back to DCS" in n for n in result["notes"])
    assert result["outcome"] == "succeeded" and cluster.leader() == candidate
    assert cluster.sql(candidate, "SELECT count(*) FROM t WHERE id = 9999")[0][0] == 1
    assert took < cluster.ttl + 15


# ----------------------------------------------------------------------------------------------- restart, reload


def test_restart_all_then_replicas_only(cluster: AgentCluster, healthy: str):
    before = start_times(cluster)
    proc, _ = hactl(cluster, "restart", cluster.scope, "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in cluster.nodes:
        assert f"Success: restart on member {name}" in proc.stdout
    after = start_times(cluster)
    assert all(after[n] != before[n] for n in cluster.nodes)
    leader = cluster.wait_healthy(timeout=60)
    proc, _ = hactl(cluster, "restart", cluster.scope, "-r", "replica", "--force", "-f", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(m["member"] for m in result["members"]) == replicas(cluster, leader)
    again = start_times(cluster)
    assert again[leader] == after[leader]
    assert all(again[n] != after[n] for n in replicas(cluster, leader))


def test_restart_pending_after_a_max_connections_change(cluster: AgentCluster, healthy: str):
    config = json.loads(cluster.dcs()["config"])
    config["postgresql"]["parameters"]["max_connections"] = int(
        config["postgresql"]["parameters"].get("max_connections", 30)) + 5
    cluster.put_key("config", json.dumps(config))
    for name in cluster.nodes:
        wait_for(lambda n=name: cluster.member(n).get("pending_restart") is True, timeout=15,
                 what=f"pending restart on {name}")
    proc, _ = hactl(cluster, "restart", cluster.scope, "--pending", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in cluster.nodes:
        wait_for(lambda n=name: not cluster.member(n).get("pending_restart"), timeout=15,
                 what=f"pending restart cleared on {name}")
    want = str(config["postgresql"]["parameters"]["max_connections"])
    assert all(cluster.sql(n, "SHOW max_connections")[0][0] == want for n in cluster.nodes)
    proc, _ = hactl(cluster, "restart", cluster.scope, "--pending", "--force")
    assert proc.returncode == 0 and "No member needs a restart" in proc.stdout


def test_reload_and_flush_of_a_scheduled_restart(cluster: AgentCluster, healthy: str):
    proc, _ = hactl(cluster, "reload", cluster.scope, "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Reload request received for member") == 3
    target = replicas(cluster, healthy)[0]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(timespec="seconds")
    proc, _ = hactl(cluster, "restart", cluster.scope, target, "--scheduled", later, "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: restart scheduled on member {target}" in proc.stdout
    wait_for(lambda: cluster.member(target).get("scheduled_restart"), timeout=10, what="scheduled restart published")
    proc, _ = hactl(cluster, "flush", cluster.scope, "restart", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: flush scheduled restart for member {target}" in proc.stdout
    wait_for(lambda: not cluster.member(target).get("scheduled_restart"), timeout=10, what="scheduled restart gone")


def test_reinit_a_replica_and_wait(cluster: AgentCluster, healthy: str):
    target = replicas(cluster, healthy)[0]
    proc, took = hactl(cluster, "reinit", cluster.scope, target, "--force", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: reinitialize for member {target}" in proc.stdout
    assert f"Reinitialize is completed on: {target}" in proc.stdout
    proc, _ = hactl(cluster, "reinit", cluster.scope, healthy, "--force")
    assert proc.returncode == ExitCode.REFUSED and "leader" in proc.stderr


# ----------------------------------------------------------------------------------------------- pause


def test_pause_kill_the_leaders_postgres_nobody_is_promoted_then_resume(cluster: AgentCluster, healthy: str):
    leader = healthy
    proc, _ = hactl(cluster, "pause", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: cluster management is paused" in proc.stdout
    listing, _ = hactl(cluster, "list")
    assert " Maintenance mode: on" in listing.stdout
    proc, _ = hactl(cluster, "pause")
    assert proc.returncode == ExitCode.REFUSED and "already paused" in proc.stderr
    try:
        os.kill(cluster.postmaster_pid(leader), signal.SIGKILL)
        # as Patroni: in pause a crashed postgres is not restarted and its agent removes the leader key
        wait_for(lambda: cluster.leader() is None, timeout=3 * cluster.loop_wait + 5, what="leader key removed")
        time.sleep(2 * cluster.loop_wait + 1)
        assert cluster.leader() is None
        assert cluster.postmaster_pid(leader) is None or not cluster.writable(leader)
        assert not any(cluster.writable(n) for n in replicas(cluster, leader))
    finally:
        proc, _ = hactl(cluster, "resume", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cluster.wait_healthy(timeout=90)


# ----------------------------------------------------------------------------------------------- on a terminal


def spawn(cluster: AgentCluster, *args: str):
    pexpect = pytest.importorskip("pexpect")
    env = clean_env()
    env.update(TERM="dumb", NO_COLOR="1")
    return pexpect.spawn(sys.executable, ["-m", "ctl", "-c", cluster.nodes["node1"].config_path, *args], cwd=REPO,
                         env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))


def finish(child) -> int:
    import pexpect

    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_interactive_switchover_on_a_terminal(cluster: AgentCluster, healthy: str):
    candidate = replicas(cluster, healthy)[-1]
    child = spawn(cluster, "switchover")
    child.expect_exact(f"Primary [{healthy}]: ")
    child.sendline("")
    child.expect_exact(f"Candidate {replicas(cluster, healthy)!r}: ")
    child.sendline(candidate)
    child.expect_exact("When should the switchover take place (e.g. <now+1h as %Y-%m-%dT%H:%M> )  [now]: ")
    child.sendline("")
    child.expect_exact(f"Are you sure you want to switchover cluster {cluster.scope}, demoting current leader "
                       f"{healthy}? [y/N]: ")
    child.sendline("y")
    child.expect_exact(f'Successfully switched over to "{candidate}"')
    assert finish(child) == 0
    assert cluster.leader() == candidate


# ----------------------------------------------------------------------------------------------- query, compat


def test_query_as_the_configured_superuser_and_sql_errors(cluster: AgentCluster, healthy: str):
    proc, _ = hactl(cluster, "query", "-c", "SELECT current_user AS u, 1 AS one")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "u\tone\npostgres\t1\n"
    proc, _ = hactl(cluster, "query", "-r", "replica", "--format", "json", "-c", "SELECT pg_is_in_recovery() AS r")
    assert proc.returncode == 0 and json.loads(proc.stdout) == [{"r": True}]
    proc, _ = hactl(cluster, "query", "-c", "SELECT * FROM no_such_table")
    assert proc.returncode == ExitCode.FAILED
    assert 'relation "no_such_table" does not exist' in proc.stderr and "42P01" in proc.stderr
    from tests.support.agents import SUPERUSER_PASSWORD

    assert SUPERUSER_PASSWORD not in proc.stdout + proc.stderr
    # -w: again and again until Ctrl-C, which ends it with exit 0
    watcher = subprocess.Popen([sys.executable, "-m", "ctl", "-c", cluster.nodes["node1"].config_path, "query",
                                "-w", "0.2", "-c", "SELECT 7 AS seven"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=REPO, env=clean_env())
    seen = ""
    try:
        # Ctrl-C once two rounds were printed (on a loaded machine the start alone can take over a second)
        deadline = time.monotonic() + 30
        while seen.count("seven\n7\n") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([watcher.stdout], [], [], 0.5)
            if ready:
                line = watcher.stdout.readline()
                if not line:
                    break
                seen += line
    finally:
        watcher.send_signal(signal.SIGINT)
        stdout, _ = watcher.communicate(timeout=10)
    stdout = seen + stdout
    assert watcher.returncode == 0 and stdout.count("seven\n7\n") >= 2, stdout


def test_real_patronictl_switchover_against_hactl_agents(cluster: AgentCluster, healthy: str):
    patronictl = patronictl_exe()
    candidate = replicas(cluster, healthy)[0]
    proc = subprocess.run([patronictl, "-c", cluster.nodes["node1"].config_path, "switchover", "--force",
                           "--candidate", candidate], capture_output=True, text=True, timeout=90, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'Successfully switched over to "{candidate}"' in proc.stdout, proc.stdout
    wait_for(lambda: cluster.leader() == candidate and cluster.writable(candidate), timeout=10,
             what=f"{candidate} leading")


def test_hactl_switchover_against_a_real_patroni_cluster(cluster: AgentCluster):
    """hactl drives Patroni 4.1.5 agents: a named switchover, then one where hactl picks the candidate."""
    patroni = PatroniCluster(cluster.etcd.hostport)
    cfg = patroni.configs["node1"]

    def roles() -> dict[str, tuple[str, str]]:
        proc, _ = hactl(cluster, "list", "-f", "json", config=cfg)
        return {r["Member"]: (r["Role"], r.get("State", "")) for r in json.loads(proc.stdout or "[]")}

    ok = False
    started = time.monotonic()
    try:
        patroni.start("node1")
        wait_for(lambda: roles().get("node1") == ("Leader", "running"), timeout=60, interval=0.5,
                 what="Patroni node1 leading")
        patroni.start("node2")
        wait_for(lambda: roles().get("node2") == ("Replica", "streaming"), timeout=60, interval=0.5,
                 what="Patroni node2 streaming")
        # plan and check read Patroni's keys and REST answers as they read hactl's
        proc, _ = hactl(cluster, "plan", "switchover", "-f", "json", config=cfg)
        assert proc.returncode == 0 and json.loads(proc.stdout)["chosen"] == "node2", proc.stdout + proc.stderr
        proc, _ = hactl(cluster, "check", "-f", "json", config=cfg)
        report = json.loads(proc.stdout)
        assert proc.returncode == 0 and report["summary"]["error"] == 0, report
        assert {f["check"] for f in report["findings"]} <= {"etcd-size", "synchronous-mode"}, report
        t0 = time.monotonic()
        proc, took = hactl(cluster, "switchover", "--candidate", "node2", "--force", "-f", "json", config=cfg)
        print(f"patroni up after {t0 - started:.1f}s; hactl switchover returned verified after {took:.2f}s")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        assert result["outcome"] == "succeeded" and result["final_roles"]["node2"]["role"] == "leader"
        assert result["final_roles"]["node1"]["role"] == "replica"
        proc, _ = hactl(cluster, "switchover", "--candidate", "nosuch", "--force", config=cfg)
        assert proc.returncode == ExitCode.REFUSED and "nosuch does not exist" in proc.stderr
        wait_for(lambda: roles().get("node1") == ("Replica", "streaming"), timeout=60, interval=0.5,
                 what="Patroni node1 following node2")
        proc, took = hactl(cluster, "switchover", "--force", config=cfg)
        print(f"second switchover returned verified after {took:.2f}s")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Candidate: node1 (chosen by hactl: the healthiest of 1 eligible member," in proc.stdout + proc.stderr
        assert roles()["node1"][0] == "Leader"
        # the other commands against Patroni's REST API: restart (verified new postmaster), reload, pause/resume
        proc, _ = hactl(cluster, "restart", patroni.scope, "node2", "--force", config=cfg)
        assert proc.returncode == 0 and "Success: restart on member node2" in proc.stdout, proc.stdout + proc.stderr
        proc, _ = hactl(cluster, "reload", patroni.scope, "--force", config=cfg)
        assert proc.returncode == 0 and proc.stdout.count("Reload request received") == 2, proc.stdout + proc.stderr
        for command in ("pause", "resume"):
            proc, _ = hactl(cluster, command, "--wait", config=cfg)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        ok = True
    finally:
        if not ok:
            print("\n" + patroni.logs())
        patroni.cleanup()


def test_remove_asks_on_a_terminal_and_scripts_say_yes_i_am_aware(cluster: AgentCluster):
    """Last: the agents stop and the cluster's keys go."""
    leader = cluster.leader()
    child = spawn(cluster, "remove", cluster.scope)
    child.expect_exact("Please confirm the cluster name to remove: ")
    child.sendline("not-" + cluster.scope)
    child.expect_exact("Error: Cluster names specified do not match")
    assert finish(child) == ExitCode.ABORTED
    assert cluster.dcs().get("initialize")
    # with the agents running, their keys come back at once: hactl says so instead of claiming success
    proc, _ = hactl(cluster, "remove", cluster.scope, "--yes-i-am-aware", "--leader", leader or "")
    assert proc.returncode == ExitCode.FAILED and "stop the agents first" in proc.stderr, proc.stdout + proc.stderr
    for name in cluster.nodes:
        cluster.stop_agent(name)
    leader = cluster.leader()
    child = spawn(cluster, "remove", cluster.scope)
    child.expect_exact("Please confirm the cluster name to remove: ")
    child.sendline(cluster.scope)
    child.expect_exact(f'You are about to remove all information in DCS for {cluster.scope}, please type: '
                       f'"Yes I am aware": ')
    child.sendline("Yes I am aware")
    if leader:
        child.expect_exact("This cluster currently is healthy. Please specify the leader name to continue: ")
        child.sendline(leader)
    child.expect_exact(f"removed cluster {cluster.scope}")
    assert finish(child) == 0
    assert cluster.dcs() == {}
