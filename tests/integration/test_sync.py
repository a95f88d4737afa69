"""Synchronous replication on real PostgreSQL, etcd and hactl agents: zero acknowledged loss, strict, degrade.

One 3-node cluster with `synchronous_mode: true` from bootstrap for the module; every test leaves it healthy with
a synchronous standby (the `synced` fixture restarts agents a test stopped).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from ctl.errors import ExitCode
from ctl.ha.sync import PLACEHOLDER, parse_standby_names
from tests.support.agents import REPO, AgentCluster, running_cluster
from tests.support.patroni import clean_env, patronictl_exe
from tests.support.procs import wait_for
from tests.support.writers import Writers, create_table, missing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(request):
    with running_cluster(request, bootstrap_dcs={"synchronous_mode": True}) as c:
        create_table(c, c.leader())
        yield c


def sync_key(c: AgentCluster) -> dict:
    raw = c.dcs().get("sync")
    return json.loads(raw) if raw else {}


def sync_names(c: AgentCluster, leader: str) -> str:
    return c.sql(leader, "SELECT current_setting('synchronous_standby_names')")[0][0]


def agree(c: AgentCluster) -> tuple[str, str, str]:
    """Leader, its sync standby, and synchronous_standby_names, once the key and the GUC agree on one standby."""
    state: dict = {}

    def ok() -> bool:
        leader = c.leader()
        key = sync_key(c)
        if not leader or key.get("leader") != leader or not key.get("sync_standby"):
            return False
        names = sync_names(c, leader)
        state.update(leader=leader, standby=key["sync_standby"], names=names)
        rows = dict(c.sql(leader, "SELECT application_name, sync_state FROM pg_stat_replication"))
        return parse_standby_names(names).names == {key["sync_standby"]} and rows.get(key["sync_standby"]) == "sync"

    wait_for(ok, timeout=30, interval=0.2, what="sync key and synchronous_standby_names to agree")
    return state["leader"], state["standby"], state["names"]


@pytest.fixture
def synced(cluster: AgentCluster) -> tuple[str, str]:
    for name, node in cluster.nodes.items():
        if node.proc is None or node.proc.poll() is not None:
            cluster.start(name)
    cluster.wait_healthy(timeout=120)
    leader, standby, _ = agree(cluster)
    return leader, standby


def hactl(c: AgentCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", "-c", c.nodes["node1"].config_path, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=REPO,
                          env=clean_env())


def edit(c: AgentCluster, *settings: str) -> None:
    args = [a for s in settings for a in ("--set", s)]
    proc = hactl(c, "edit-config", "--force", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------- roles and REST


def test_after_bootstrap_the_key_names_the_standby_postgres_waits_for(cluster: AgentCluster, synced):
    leader, standby = synced
    names = sync_names(cluster, leader)
    assert names == standby  # Patroni's format: a bare name, no FIRST, no '*'
    assert cluster.dcs()["sync"] == json.dumps({"leader": leader, "quorum": 0, "sync_standby": standby},
                                               separators=(",", ":"))
    other = (set(cluster.nodes) - {leader, standby}).pop()
    # each agent serves what its last loop saw (at most loop_wait old)
    wait_for(lambda: cluster.rest(standby, "/sync")[0] == 200, timeout=5, what="GET /sync 200 on the standby")
    wait_for(lambda: {r["application_name"]: r["sync_state"] for r in cluster.rest(leader)[1]["replication"]}
             .get(standby) == "sync", timeout=5, what="the leader's GET /patroni to show the sync standby")
    codes = {n: {p: cluster.rest(n, p)[0] for p in ("/sync", "/async", "/read-only-sync")} for n in cluster.nodes}
    assert codes[standby] == {"/sync": 200, "/async": 503, "/read-only-sync": 200}
    assert codes[other] == {"/sync": 503, "/async": 200, "/read-only-sync": 503}
    assert codes[leader] == {"/sync": 503, "/async": 503, "/read-only-sync": 200}
    assert cluster.rest(standby)[1]["sync_standby"] is True
    repl = {r["application_name"]: r["sync_state"] for r in cluster.rest(leader)[1]["replication"]}
    assert repl == {standby: "sync", other: "async"}
    roles = {m["name"]: m["role"] for m in cluster.rest(leader, "/cluster")[1]["members"]}
    assert roles == {leader: "leader", standby: "sync_standby", other: "replica"}


def test_list_shows_sync_standby_like_real_patronictl(cluster: AgentCluster, synced):
    leader, standby = synced
    ours = hactl(cluster, "list", "-f", "json")
    assert ours.returncode == 0, ours.stderr
    rows = {r["Member"]: r["Role"] for r in json.loads(ours.stdout)}
    assert rows[standby] == "Sync Standby" and rows[leader] == "Leader"
    theirs = subprocess.run([patronictl_exe(), "-c", cluster.nodes["node1"].config_path, "list", "-f", "json"],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    assert theirs.returncode == 0, theirs.stderr
    assert {r["Member"]: r["Role"] for r in json.loads(theirs.stdout)} == rows


# ----------------------------------------------------------------------------------------------- switchover


def test_switchover_refuses_an_async_candidate_and_goes_to_the_sync_standby(cluster: AgentCluster, synced):
    leader, standby = synced
    other = (set(cluster.nodes) - {leader, standby}).pop()
    proc = hactl(cluster, "switchover", "--candidate", other, "--force")
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert "not a synchronous standby" in proc.stderr
    # real patronictl against hactl agents refuses the same candidate (the agent's POST /switchover answers 412)
    theirs = subprocess.run([patronictl_exe(), "-c", cluster.nodes["node1"].config_path, "switchover", "--force",
                             "--candidate", other], capture_output=True, text=True, timeout=60, env=clean_env())
    assert "Switchover failed, details: 412, candidate name does not match with sync_standby" in theirs.stdout, \
        theirs.stdout + theirs.stderr
    assert cluster.leader() == leader
    proc = hactl(cluster, "switchover", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cluster.leader() == standby
    new_leader, new_standby, names = agree(cluster)
    assert new_leader == standby and names == new_standby
    # real patronictl switches over to the synchronous standby of a hactl cluster
    theirs = subprocess.run([patronictl_exe(), "-c", cluster.nodes["node1"].config_path, "switchover", "--force",
                             "--candidate", new_standby], capture_output=True, text=True, timeout=90, env=clean_env())
    assert theirs.returncode == 0 and f'Successfully switched over to "{new_standby}"' in theirs.stdout, \
        theirs.stdout + theirs.stderr
    assert agree(cluster)[0] == new_standby


# ----------------------------------------------------------------------------------------------- crash


def crash_under_writers(cluster: AgentCluster, leader: str, id_base: int) -> str:
    """Crash the leader under 4 writers; returns the new leader once it took writes, after checking that every
    acknowledged write is on it and that the writers saw the gap."""
    with Writers(cluster, n=4, id_base=(int(time.time()) % 10**6) * 10**10 + id_base) as w:
        wait_for(lambda: w.count() > 200, timeout=20, what=f"writes acknowledged ({w.errors()})")
        cluster.crash(leader)
        crashed_at = time.monotonic()
        wait_for(lambda: cluster.leader() not in (None, leader) and cluster.writable(cluster.leader()),
                 timeout=60, what="a new leader")
        new = cluster.leader()
        before = w.count()
        wait_for(lambda: w.count() > before + 100, timeout=30, what="writes on the new leader")
    assert not missing(cluster, new, w.acked()), "acknowledged writes lost"
    assert w.gap(crashed_at) is not None
    return new


def test_a_crash_under_writers_loses_no_acknowledged_write(cluster: AgentCluster, synced):
    leader, standby = synced
    new = crash_under_writers(cluster, leader, id_base=0)
    assert new == standby  # only the synchronous standby may be promoted
    cluster.start(leader)
    cluster.wait_healthy(timeout=120)
    agree(cluster)


# ----------------------------------------------------------------------------------------------- strict / not strict


def _stop_replicas(c: AgentCluster, leader: str) -> list[str]:
    names = sorted(set(c.nodes) - {leader})
    threads = [threading.Thread(target=c.stop_agent, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return names


def test_non_strict_degrades_to_async_and_recovers(cluster: AgentCluster, synced):
    leader, _ = synced
    replicas = _stop_replicas(cluster, leader)
    wait_for(lambda: sync_names(cluster, leader) == "" and sync_key(cluster).get("sync_standby") is None,
             timeout=15, what="fallback to asynchronous")
    t0 = time.monotonic()
    cluster.sql(leader, "INSERT INTO acked_writes VALUES (-1, -1)")
    assert time.monotonic() - t0 < 2  # not waiting
    with open(cluster.nodes[leader].log_path, encoding="utf-8") as f:
        assert "no synchronous standby available: committing asynchronously" in f.read()
    rows = {r["Member"]: r["Role"] for r in json.loads(hactl(cluster, "list", "-f", "json").stdout)}
    assert "Sync Standby" not in rows.values()
    for n in replicas:
        cluster.start(n)
    leader2, standby, _ = agree(cluster)
    assert leader2 == leader and standby in replicas


def test_strict_blocks_with_both_replicas_stopped_until_one_returns(cluster: AgentCluster, synced):
    leader, standby = synced
    edit(cluster, "synchronous_mode_strict=true")
    try:
        replicas = _stop_replicas(cluster, leader)
        wait_for(lambda: sync_names(cluster, leader) in (standby, PLACEHOLDER), timeout=15,
                 what="strict mode keeping a promotable name")
        assert sync_names(cluster, leader) != "*"
        done = threading.Event()

        def write() -> None:
            cluster.sql(leader, "INSERT INTO acked_writes VALUES (-2, -2)")
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not done.wait(3), "a write was acknowledged with no synchronous standby in strict mode"
        cluster.start(replicas[0])
        assert done.wait(60), "the waiting write did not complete once a standby returned"
        # released by a member that may be promoted, and now listed as such
        key = sync_key(cluster)
        wait_for(lambda: sync_key(cluster).get("sync_standby") == replicas[0], timeout=30,
                 what=f"{replicas[0]} listed in the sync key")
        assert key.get("sync_standby") in (None, standby, replicas[0])
        wait_for(lambda: cluster.sql(replicas[0], "SELECT count(*) FROM acked_writes WHERE id = -2")[0][0] == 1,
                 timeout=10, what="the released write on the standby")
        cluster.start(replicas[1])
    finally:
        edit(cluster, "synchronous_mode_strict=false")


# ----------------------------------------------------------------------------------------------- changes at run time


def test_node_count_2_then_off_then_on_each_within_a_few_loops(cluster: AgentCluster, synced):
    leader, _ = synced
    replicas = sorted(set(cluster.nodes) - {leader})
    edit(cluster, "synchronous_node_count=2")
    try:
        wait_for(lambda: sync_key(cluster).get("sync_standby") == ",".join(replicas), timeout=10,
                 what="both replicas in the sync key")
        assert sync_names(cluster, leader) == f"2 ({','.join(replicas)})"
    finally:
        edit(cluster, "synchronous_node_count=1")
    edit(cluster, "synchronous_mode=false")
    wait_for(lambda: "sync" not in cluster.dcs() and sync_names(cluster, leader) == "", timeout=5,
             what="sync key deleted and synchronous_standby_names restored")
    edit(cluster, "synchronous_mode=true")
    assert agree(cluster)[0] == leader


# ----------------------------------------------------------------------------------------------- quorum


def quorum_state(c: AgentCluster) -> tuple[str, dict, str]:
    leader = c.leader() or ""
    return leader, sync_key(c), sync_names(c, leader) if leader else ""


def quorum_steady(c: AgentCluster, q: int, n: int) -> tuple[str, list[str]]:
    """The leader and its standbys once the key lists both standbys with quorum q and the GUC is ANY n of them."""
    state: dict = {}

    def ok() -> bool:
        leader, key, names = quorum_state(c)
        others = sorted(set(c.nodes) - {leader})
        state.update(leader=leader, others=others, key=key, names=names)
        return (key.get("leader") == leader and key.get("sync_standby") == ",".join(others)
                and key.get("quorum") == q and names == f"ANY {n} ({','.join(others)})")

    wait_for(ok, timeout=40, interval=0.2, what=f"quorum {q} and ANY {n} ({state})")
    return state["leader"], state["others"]


@pytest.fixture
def quorum_mode(cluster: AgentCluster, synced):
    edit(cluster, "synchronous_mode=quorum")
    try:
        yield quorum_steady(cluster, 1, 1)
    finally:
        edit(cluster, "synchronous_mode=true", "synchronous_node_count=1")
        for name, node in cluster.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                cluster.start(name)
        cluster.wait_healthy(timeout=120)
        agree(cluster)


def test_quorum_roles_rest_list_and_node_count(cluster: AgentCluster, quorum_mode):
    leader, standbys = quorum_mode
    # hactl list and real patronictl show the same Quorum Standby roles
    ours = hactl(cluster, "list", "-f", "json")
    assert ours.returncode == 0, ours.stderr
    rows = {r["Member"]: r["Role"] for r in json.loads(ours.stdout)}
    assert rows == {leader: "Leader", **{s: "Quorum Standby" for s in standbys}}
    theirs = subprocess.run([patronictl_exe(), "-c", cluster.nodes["node1"].config_path, "list", "-f", "json"],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    assert theirs.returncode == 0, theirs.stderr
    assert {r["Member"]: r["Role"] for r in json.loads(theirs.stdout)} == rows
    for s in standbys:
        wait_for(lambda s=s: cluster.rest(s, "/quorum")[0] == 200, timeout=5, what=f"GET /quorum 200 on {s}")
        assert cluster.rest(s, "/read-only-quorum")[0] == 200 and cluster.rest(s, "/sync")[0] == 503
    assert cluster.rest(leader, "/quorum")[0] == 503 and cluster.rest(leader, "/read-only-quorum")[0] == 200
    roles = {m["name"]: m["role"] for m in cluster.rest(leader, "/cluster")[1]["members"]}
    assert roles == {leader: "leader", **{s: "quorum_standby" for s in standbys}}

    # W=2: ANY 2 before the key lowers its quorum to 0; never quorum 0 while a single standby acknowledges
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            _, key, names = quorum_state(cluster)
            seen.append((key.get("quorum"), names))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        edit(cluster, "synchronous_node_count=2")
        quorum_steady(cluster, 0, 2)
    finally:
        stop.set()
        poller.join()
    # (quorum_steady saw the end state; the poller's last sample may be older than that)
    assert (0, f"ANY 1 ({','.join(standbys)})") not in seen, seen
    assert (1, f"ANY 2 ({','.join(standbys)})") in seen, seen  # the GUC went first
    edit(cluster, "synchronous_node_count=1")
    quorum_steady(cluster, 1, 1)

    # a switchover goes to a quorum standby; the former leader becomes a voter
    proc = hactl(cluster, "switchover", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new, voters = quorum_steady(cluster, 1, 1)
    assert new in standbys and leader in voters


def test_quorum_crash_under_writers_loses_nothing_and_the_old_leader_votes_again(cluster: AgentCluster,
                                                                               quorum_mode):
    leader, standbys = quorum_mode
    new = crash_under_writers(cluster, leader, id_base=5 * 10**9)
    assert new in standbys
    # before it promoted, the new leader waited for a set that includes the former leader
    with open(cluster.nodes[new].log_path, encoding="utf-8") as f:
        log = f.read()
    promote = log.rindex("promoting PostgreSQL")
    before_promote = log[:promote]
    names = before_promote[before_promote.rindex("synchronous_standby_names = "):].splitlines()[0]
    assert f"ANY 1 (" in names and leader in names, names
    cluster.start(leader)
    cluster.wait_healthy(timeout=120)
    now, voters = quorum_steady(cluster, 1, 1)
    assert now == new and leader in voters
