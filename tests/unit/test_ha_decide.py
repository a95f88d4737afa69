"""The HA brain as a table: one row per rule. No processes, no network, no clock."""

from __future__ import annotations

import ast
import pathlib
from dataclasses import replace

import pytest

from ctl.ha.actions import Kind
from ctl.ha.decide import decide, demote_after
from ctl.ha.standby import REMOTE
from ctl.ha.state import FailsafeView, HaSettings, Observation, PeerView, PgView, Replica
from ctl.model import Cluster, DynamicConfig, Failover, Leader, Member, Status, SyncState

ME = "node2"
S = HaSettings(ttl=30, loop_wait=10, retry_timeout=10, maximum_lag_on_failover=1_000_000, use_pg_rewind=True)

REPLICA = PgView(running=True, in_recovery=True, timeline=1, wal_lsn=5_000_000, streaming=True,
                 upstream="node1", data_dir_empty=False, system_identifier="42")
PRIMARY = PgView(running=True, in_recovery=False, timeline=1, wal_lsn=5_000_000, data_dir_empty=False,
                 system_identifier="42")
STOPPED = PgView(running=False, data_dir_empty=False, system_identifier="42")
EMPTY = PgView(running=False, data_dir_empty=True)


def member(name: str, **kw) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:{5432 + int(name[-1])}/postgres",
                  api_url=f"http://127.0.0.1:{8008 + int(name[-1])}/patroni", **kw)


def with_member(c: Cluster, name: str, **kw) -> Cluster:
    return replace(c, members=tuple(replace(m, **kw) if m.name == name else m for m in c.members))


def cluster(leader: str | None = "node1", optime: int | None = 5_000_000, initialize: str | None = "42",
            pause: bool = False, **kw) -> Cluster:
    data = {"ttl": 30, "loop_wait": 10}
    if pause:
        data["pause"] = True
    return Cluster(
        scope="demo",
        initialize=initialize,
        config=DynamicConfig(data),
        leader=Leader(leader) if leader else None,
        members=tuple(member(n, timeline=kw.get("leader_tl", 1) if n == leader else 1,
                             state=kw.get("leader_state", "running") if n == leader else "running")
                      for n in ("node1", "node2", "node3")),
        status=Status(optime=optime),
    )


def synced(c: Cluster, leader: str, *standbys: str) -> Cluster:
    """The cluster with a `sync` key (synchronous_mode on comes from the observation's settings: SYNC)."""
    return replace(c, sync=SyncState(leader=leader, sync_standby=standbys, quorum=0, mod_revision=3))


SYNC = replace(S, synchronous_mode="on")


def obs(pg: PgView = REPLICA, c: Cluster | None = None, *, dcs_down: bool = False, settings: HaSettings = S,
        peers: dict | None = None, now: float = 100.0, last_renewal: float | None = None,
        wall: float = 0.0, task: str | None = None) -> Observation:
    if c is not None and c.sync is not None and settings is S:
        settings = SYNC
    return Observation(name=ME, now=now, settings=settings, pg=pg,
                       cluster=None if dcs_down else (c if c is not None else cluster()),
                       last_lock_renewal=last_renewal, peers=peers or {}, wall_time=wall, task=task)


def fo(c: Cluster, **kw) -> Cluster:
    return replace(c, failover=Failover(**kw))


def peer(name: str, lsn: int | None, **kw) -> PeerView:
    return PeerView(name=name, reachable=True, wal_lsn=lsn, **kw)


CASES = [
    # (id, observation, expected action kinds, a word the reason must contain)
    ("bootstrap race when the cluster is new", obs(EMPTY, cluster(leader=None, initialize=None)),
     (Kind.INITIALIZE,), "bootstrap"),
    ("wait while another member bootstraps", obs(EMPTY, cluster(leader=None, initialize="")), (Kind.NOOP,),
     "bootstrapping"),
    ("clone an empty data dir from the leader", obs(EMPTY), (Kind.CLONE, Kind.START_REPLICA), "cloning"),
    ("empty data dir and no leader: wait", obs(EMPTY, cluster(leader=None)), (Kind.NOOP,), "waiting"),
    ("foreign system identifier: refuse", obs(replace(REPLICA, system_identifier="7")), (Kind.NOOP,), "refusing"),
    ("leader renews", obs(PRIMARY, cluster(leader=ME)),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "renewed"),
    ("lock holder in recovery promotes", obs(REPLICA, cluster(leader=ME)),
     (Kind.RENEW_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "promoting"),
    ("replica follows the leader", obs(REPLICA), (Kind.NOOP,), "following node1"),
    ("replica re-points to a new leader", obs(REPLICA, cluster(leader="node3")), (Kind.FOLLOW,), "following node3"),
    ("stalled replica on an older timeline rewinds",
     obs(replace(REPLICA, streaming=False, stream_stalled=True), cluster(leader="node1", leader_tl=2)),
     (Kind.REWIND,), "rewinding"),
    ("stalled replica on a newer timeline than the leader (diverged) rewinds",
     obs(replace(REPLICA, timeline=3, streaming=False, stream_stalled=True), cluster(leader="node1", leader_tl=2)),
     (Kind.REWIND,), "diverged"),
    ("stalled replica does not rewind from a leader that is not running",
     obs(replace(REPLICA, streaming=False, stream_stalled=True),
         cluster(leader="node1", leader_tl=2, leader_state="stopped")), (Kind.NOOP,), "not streaming"),
    ("stalled replica on the same timeline just reports",
     obs(replace(REPLICA, streaming=False, stream_stalled=True)), (Kind.NOOP,), "not streaming"),
    ("second primary demotes", obs(PRIMARY), (Kind.DEMOTE,), "node1 holds the leader lock"),
    ("healthy replica takes over", obs(REPLICA, cluster(leader=None)),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
    ("lagging replica is never promoted", obs(replace(REPLICA, wal_lsn=3_000_000), cluster(leader=None)),
     (Kind.NOOP,), "maximum_lag_on_failover"),
    ("lag exactly at the limit is allowed", obs(replace(REPLICA, wal_lsn=4_000_000), cluster(leader=None)),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
    ("nofailover replica never takes the lock",
     obs(REPLICA, cluster(leader=None), settings=replace(S, nofailover=True)), (Kind.NOOP,), "nofailover"),
    ("a peer further ahead wins", obs(REPLICA, cluster(leader=None), peers={"node3": peer("node3", 5_000_100)}),
     (Kind.NOOP,), "node3 is ahead"),
    ("an unreachable peer does not block", obs(REPLICA, cluster(leader=None),
                                               peers={"node3": PeerView("node3", reachable=False)}),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
    ("a nofailover peer ahead does not block",
     obs(REPLICA, cluster(leader=None), peers={"node3": peer("node3", 9_000_000, nofailover=True)}),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
    ("a still-running primary peer blocks promotion",
     obs(REPLICA, cluster(leader=None), peers={"node1": peer("node1", 5_000_000, is_primary=True)}),
     (Kind.NOOP,), "still runs as primary"),
    ("equal position, higher priority peer goes first",
     obs(REPLICA, cluster(leader=None), peers={"node3": peer("node3", 5_000_000, failover_priority=5)}),
     (Kind.NOOP,), "deferring"),
    ("unknown own position: not eligible", obs(replace(REPLICA, wal_lsn=None), cluster(leader=None)),
     (Kind.NOOP,), "unknown"),
    ("running primary with no leader key re-acquires", obs(PRIMARY, cluster(leader=None)),
     (Kind.ACQUIRE_LOCK, Kind.UPDATE_STATUS), "acquiring"),
    ("DCS down, replica stays", obs(REPLICA, dcs_down=True), (Kind.NOOP,), "staying a replica"),
    ("DCS down, leader within its window waits", obs(PRIMARY, dcs_down=True, now=105, last_renewal=100),
     (Kind.NOOP,), "demoting at"),
    ("DCS down, leader past its window demotes", obs(PRIMARY, dcs_down=True, now=110.5, last_renewal=100),
     (Kind.DEMOTE,), "cannot renew"),
    ("DCS down, primary without a lock demotes", obs(PRIMARY, dcs_down=True), (Kind.DEMOTE,), "holds no leader"),
    ("crashed lock holder restarts in place as primary",
     obs(replace(STOPPED, was_primary=True, crashed=True), cluster(leader=ME)),
     (Kind.RENEW_LOCK, Kind.START_PRIMARY), "postgres crashed while holding the leader lock: starting it in place"),
    ("crashed lock holder with primary_start_timeout 0 releases for a failover",
     obs(replace(STOPPED, was_primary=True, crashed=True), cluster(leader=ME),
         settings=replace(S, primary_start_timeout=0)), (Kind.HAND_OVER,), "primary_start_timeout is 0"),
    ("after handing over, the crashed primary stays down while a replica takes over",
     obs(replace(STOPPED, was_primary=True, crashed=True, handed_over_at=95.0), cluster(leader=None)),
     (Kind.NOOP,), "waiting up to 30s for a replica"),
    ("nobody took over within the grace time: start read-only for an election",
     obs(replace(STOPPED, was_primary=True, crashed=True, handed_over_at=60.0), cluster(leader=None)),
     (Kind.START_REPLICA,), "read-only"),
    ("after handing over, a new leader is followed through pg_rewind",
     obs(replace(STOPPED, was_primary=True, crashed=True, handed_over_at=95.0), cluster(leader="node3")),
     (Kind.REWIND,), "rewinding"),
    ("primary_start_timeout 0 but nobody can take over: restart in place",
     obs(replace(STOPPED, was_primary=True, crashed=True),
         with_member(with_member(cluster(leader=ME), "node1", state="stopped"), "node3", tags={"nofailover": True}),
         settings=replace(S, primary_start_timeout=0)), (Kind.RENEW_LOCK, Kind.START_PRIMARY), "in place"),
    ("lock holder that cannot start releases", obs(replace(STOPPED, was_primary=True, start_failed=True),
                                                  cluster(leader=ME)), (Kind.HAND_OVER,), "failing to start"),
    ("lock holder whose data dir was never a primary releases", obs(STOPPED, cluster(leader=ME)),
     (Kind.RELEASE_LOCK,), "cannot start as primary"),
    ("a task runs: the lock holder only renews", obs(STOPPED, cluster(leader=ME), task="restart"),
     (Kind.RENEW_LOCK,), "updated leader lock during restart"),
    ("former primary rejoins with pg_rewind", obs(replace(STOPPED, was_primary=True)), (Kind.REWIND,), "rewinding"),
    ("former primary without pg_rewind starts as replica",
     obs(replace(STOPPED, was_primary=True), settings=replace(S, use_pg_rewind=False)),
     (Kind.START_REPLICA,), "without pg_rewind"),
    ("stopped replica starts following", obs(STOPPED), (Kind.START_REPLICA,), "replica of node1"),
    ("stopped node with no leader starts read-only", obs(STOPPED, cluster(leader=None)), (Kind.START_REPLICA,),
     "read-only"),
    ("replicatefrom: stream from the tagged member", obs(REPLICA, settings=replace(S, replicatefrom="node3")),
     (Kind.FOLLOW,), "via node3"),
    ("replicatefrom member down: stream from the leader",
     obs(REPLICA, with_member(cluster(), "node3", state="stopped"), settings=replace(S, replicatefrom="node3")),
     (Kind.NOOP,), "following node1"),
    ("clonefrom: base backup from the tagged member",
     obs(EMPTY, with_member(cluster(), "node3", tags={"clonefrom": True})), (Kind.CLONE, Kind.START_REPLICA),
     "node3 (clonefrom)"),
    ("switchover: leader steps down for a healthy candidate",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME, member="node3"), peers={"node3": peer("node3", 5_000_000)}),
     (Kind.STEP_DOWN,), "stepping down"),
    ("switchover: lagging candidate refused with the reason",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME, member="node3"), peers={"node3": peer("node3", 1_000_000)}),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER), "node3 lags 3.8 MB behind"),
    ("switchover: unreachable candidate refused",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME, member="node3")),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER), "does not answer"),
    ("switchover: nofailover candidate refused",
     obs(PRIMARY, fo(with_member(cluster(leader=ME), "node3", tags={"nofailover": True}), leader=ME,
                     member="node3"), peers={"node3": peer("node3", 5_000_000)}),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER), "tagged nofailover"),
    ("switchover without candidate picks the most advanced replica",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME),
         peers={"node1": peer("node1", 4_900_000), "node3": peer("node3", 5_000_000)}),
     (Kind.STEP_DOWN,), "healthiest candidate node3"),
    ("switchover without any good candidate lists why",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME),
         peers={"node1": peer("node1", 1), "node3": peer("node3", 5_000_000, nofailover=True)}),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER),
     "no good candidates (node1 lags"),
    ("switchover naming another leader is cleared",
     obs(PRIMARY, fo(cluster(leader=ME), leader="node1", member="node3")),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER), "names node1 as the leader"),
    ("scheduled switchover waits for its time",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME, member="node3", scheduled_at="2026-01-01T12:00:00+00:00"),
         peers={"node3": peer("node3", 5_000_000)}, wall=1767268800 - 60),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "scheduled at"),
    ("scheduled switchover fires when due",
     obs(PRIMARY, fo(cluster(leader=ME), leader=ME, member="node3", scheduled_at="2026-01-01T12:00:00+00:00"),
         peers={"node3": peer("node3", 5_000_000)}, wall=1767268800 + 1),
     (Kind.STEP_DOWN,), "stepping down"),
    ("the requested candidate takes over",
     obs(REPLICA, fo(cluster(leader=None), leader="node1", member=ME)),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.CLEAR_FAILOVER, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS),
     "requested candidate"),
    ("a lagging requested candidate gives up",
     obs(replace(REPLICA, wal_lsn=1), fo(cluster(leader=None), leader="node1", member=ME)),
     (Kind.CLEAR_FAILOVER,), "exceeds maximum_lag_on_failover"),
    ("manual failover with the leader dead skips the lag check",
     obs(replace(REPLICA, wal_lsn=1), fo(cluster(leader=None), member=ME)),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.CLEAR_FAILOVER, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS),
     "requested candidate"),
    ("other replicas wait for a reachable requested candidate",
     obs(REPLICA, fo(cluster(leader=None), member="node3"), peers={"node3": peer("node3", 5_000_000)}),
     (Kind.NOOP,), "asked to take over"),
    ("other replicas elect when the requested candidate is gone",
     obs(REPLICA, fo(cluster(leader=None), member="node3"), peers={"node3": PeerView("node3", reachable=False)}),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
    ("stepped-down leader waits for the candidate before restarting",
     obs(replace(STOPPED, was_primary=True), fo(cluster(leader=None), leader=ME, member="node3")),
     (Kind.NOOP,), "waiting for node3"),
    ("paused: switchover to a named member still works",
     obs(PRIMARY, fo(cluster(leader=ME, pause=True), leader=ME, member="node3"),
         peers={"node3": peer("node3", 5_000_000)}), (Kind.STEP_DOWN,), "stepping down"),
    ("paused: no promotion without a leader", obs(REPLICA, cluster(leader=None, pause=True)), (Kind.NOOP,), "paused"),
    ("paused: stopped node is not started", obs(STOPPED, cluster(pause=True)), (Kind.NOOP,), "paused"),
    ("paused: leader keeps renewing", obs(PRIMARY, cluster(leader=ME, pause=True)),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS), "paused"),
    # synchronous mode (details and exact values in test_ha_sync.py)
    ("sync: the leader adds a streaming standby to synchronous_standby_names",
     obs(replace(PRIMARY, replication=(Replica("node3"),), sync_names="", sync_names_managed=True),
         synced(cluster(leader=ME), ME)), (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS,
                                           Kind.SET_SYNC_NAMES), "synchronous_standby_names = node3"),
    ("sync: the leader lists a confirmed standby in the sync key",
     obs(replace(PRIMARY, replication=(Replica("node3", sync_state="sync", lsn=5_000_000),), sync_names="node3",
                 sync_names_managed=True, sync_ready_lsn=5_000_000), synced(cluster(leader=ME), ME)),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.WRITE_SYNC), "synchronous standby: node3"),
    ("sync, not strict: no standby left, the key first, then asynchronous",
     obs(replace(PRIMARY, sync_names="node3", sync_names_managed=True), synced(cluster(leader=ME), ME, "node3")),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.WRITE_SYNC, Kind.SET_SYNC_NAMES),
     "committing asynchronously"),
    ("sync, strict: no standby left, commits wait for the listed one",
     obs(replace(PRIMARY, sync_names="node3", sync_names_managed=True), synced(cluster(leader=ME), ME, "node3"),
         settings=replace(SYNC, synchronous_mode_strict=True)),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "commits wait"),
    ("sync: only a listed standby may promote", obs(REPLICA, synced(cluster(leader=None), "node1", "node3")),
     (Kind.NOOP,), "not a synchronous standby"),
    ("sync: sync_standby null means no replica promotes", obs(REPLICA, synced(cluster(leader=None), "node1")),
     (Kind.NOOP,), "lists no member"),
    ("sync: the listed standby promotes after writing the sync key",
     obs(REPLICA, synced(cluster(leader=None), "node1", ME)),
     (Kind.ACQUIRE_LOCK, Kind.WRITE_SYNC, Kind.SET_SYNC_NAMES, Kind.PROMOTE, Kind.UPDATE_STATUS,
      Kind.CREATE_SLOTS), "healthiest"),
    ("sync: the former leader may take the lock back", obs(REPLICA, synced(cluster(leader=None), ME)),
     (Kind.ACQUIRE_LOCK, Kind.WRITE_SYNC, Kind.SET_SYNC_NAMES, Kind.PROMOTE, Kind.UPDATE_STATUS,
      Kind.CREATE_SLOTS), "healthiest"),
    ("sync: switchover to an asynchronous member is refused",
     obs(PRIMARY, fo(synced(cluster(leader=ME), ME, "node1"), leader=ME, member="node3"),
         peers={"node3": peer("node3", 5_000_000)}),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.CLEAR_FAILOVER), "not a synchronous standby"),
    ("sync: switchover without a candidate picks the synchronous standby",
     obs(PRIMARY, fo(synced(cluster(leader=ME), ME, "node1"), leader=ME),
         peers={"node1": peer("node1", 4_900_000), "node3": peer("node3", 5_000_000)}),
     (Kind.STEP_DOWN,), "healthiest candidate node1"),
    ("sync: a crashed primary restarts waiting for its sync standby",
     obs(replace(STOPPED, was_primary=True), synced(cluster(leader=ME), ME, "node3")),
     (Kind.RENEW_LOCK, Kind.SET_SYNC_NAMES, Kind.START_PRIMARY), "starting it in place as primary"),
    ("paused: a crashed primary is not restarted and the lock goes",
     obs(replace(STOPPED, was_primary=True, crashed=True), cluster(leader=ME, pause=True)),
     (Kind.RELEASE_LOCK,), "no restart in maintenance mode"),
    ("a task runs: a replica never races for leadership", obs(EMPTY, cluster(leader=None), task="reinitialize"),
     (Kind.NOOP,), "reinitialize in progress: not healthy enough"),
    ("a task runs: a replica just reports it", obs(EMPTY, task="bootstrap from node1"), (Kind.NOOP,),
     "bootstrap from node1 in progress"),
    ("a task runs: a primary that lost the lock demotes", obs(PRIMARY, task="restart"), (Kind.DEMOTE,),
     "lost leader lock during restart"),
    ("a task runs: our own bootstrap's primary is not demoted",
     obs(PRIMARY, cluster(leader=None, initialize=""), task="bootstrap"), (Kind.NOOP,), "bootstrap in progress"),
    ("a task runs: paused primary without the lock is left alone",
     obs(PRIMARY, cluster(pause=True), task="restart"), (Kind.NOOP,), "restart in progress"),
    ("a task runs and the DCS is down: the leader's window still applies",
     obs(PRIMARY, dcs_down=True, now=110.5, last_renewal=100, task="restart"), (Kind.DEMOTE,), "cannot renew"),
]


@pytest.mark.parametrize("observation,kinds,word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(observation: Observation, kinds: tuple[Kind, ...], word: str) -> None:
    decision = decide(observation)
    assert decision.kinds == kinds, decision.reason
    assert word in decision.reason


def test_demote_window_leaves_time_before_the_lease_expires() -> None:
    for ttl, loop_wait, retry in [(30, 10, 10), (10, 1, 3), (8, 2, 3), (20, 5, 7)]:
        s = HaSettings(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry)
        window = demote_after(obs(PRIMARY, settings=s))
        # a loop that starts just before the window, plus a DCS call timeout, still demotes before ttl
        assert window + loop_wait <= ttl - 1, (ttl, loop_wait, retry, window)


def test_ha_package_imports_no_io_modules() -> None:
    forbidden = {"os", "socket", "subprocess", "time", "random", "threading", "urllib", "http", "etcd3", "grpc",
                 "psycopg", "httpx", "ctl.dcs", "ctl.pg", "ctl.agent", "ctl.cli"}
    for path in (pathlib.Path(__file__).resolve().parents[2] / "ctl" / "ha").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                assert root not in forbidden and not any(name.startswith(f) for f in forbidden if "." in f), \
                    f"{path} imports {name}"


# ------------------------------------------------------------------------------------------------ failsafe_mode

FS_MEMBERS = {"node1": "http://127.0.0.1:8009/patroni", ME: "http://127.0.0.1:8010/patroni",
              "node3": "http://127.0.0.1:8011/patroni"}


def fs(**kw) -> FailsafeView:
    return FailsafeView(enabled=kw.pop("enabled", True), members=kw.pop("members", FS_MEMBERS), **kw)


def fs_obs(pg: PgView = PRIMARY, c: Cluster | None = None, view: FailsafeView | None = None, **kw) -> Observation:
    return replace(obs(pg, c, **kw), failsafe=view if view is not None else fs())


FAILSAFE_CASES = [
    ("failsafe: every member accepted, the leader keeps running past its window",
     fs_obs(view=fs(all_accepted=True), dcs_down=True, now=160, last_renewal=100), (Kind.NOOP,),
     "all members are accessible"),
    ("failsafe: one member did not accept, the leader demotes at once, early in its window (Patroni's rule)",
     fs_obs(view=fs(all_accepted=False, unreachable=("node3",)), dcs_down=True, now=100.5, last_renewal=100),
     (Kind.DEMOTE,), "node3 did not accept"),
    ("failsafe: after keeping on, a lost member means demotion at once",
     fs_obs(view=fs(all_accepted=False, unreachable=("node1",)), dcs_down=True, now=400, last_renewal=100),
     (Kind.DEMOTE,), "node1 did not accept"),
    ("failsafe: not asked (the exchange did not run), the usual grace before demoting",
     fs_obs(view=fs(), dcs_down=True, now=100.5, last_renewal=100), (Kind.NOOP,), "demoting at"),
    ("failsafe: not listed in the failsafe key, the usual rule",
     fs_obs(view=fs(all_accepted=True, members={"node1": "x"}), dcs_down=True, now=110.5, last_renewal=100),
     (Kind.DEMOTE,), "cannot renew"),
    ("failsafe off: every member reachable does not matter",
     fs_obs(view=fs(enabled=False, all_accepted=True), dcs_down=True, now=110.5, last_renewal=100),
     (Kind.DEMOTE,), "cannot renew"),
    ("failsafe: a primary that never held the lock demotes",
     fs_obs(view=fs(all_accepted=True), dcs_down=True), (Kind.DEMOTE,), "holds no leader"),
    ("failsafe: a replica does not race while the leader POSTs /failsafe",
     fs_obs(REPLICA, cluster(leader=None), fs(leader="node1")), (Kind.NOOP,), "node1 is the failsafe leader"),
    ("failsafe: a node missing from the failsafe key never races",
     fs_obs(REPLICA, cluster(leader=None), fs(members={"node1": "x", "node3": "y"})), (Kind.NOOP,),
     "not listed in the failsafe key"),
    ("failsafe: an empty failsafe key does not block the race",
     fs_obs(REPLICA, cluster(leader=None), fs(members={})),
     (Kind.ACQUIRE_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "healthiest"),
]


@pytest.mark.parametrize("observation,kinds,word", [c[1:] for c in FAILSAFE_CASES],
                         ids=[c[0] for c in FAILSAFE_CASES])
def test_decide_failsafe(observation: Observation, kinds: tuple[Kind, ...], word: str) -> None:
    decision = decide(observation)
    assert decision.kinds == kinds, decision.reason
    assert word in decision.reason


# ------------------------------------------------------------------------------------------------ standby cluster

STANDBY_SECTION = {"host": "10.0.0.9", "port": 5432, "primary_slot_name": "dr"}
STANDBY_LEADER = replace(REPLICA, upstream=REMOTE)


def standby(c: Cluster, section: dict | None = None) -> Cluster:
    data = dict(c.config.data) if c.config else {}
    data["standby_cluster"] = section if section is not None else STANDBY_SECTION
    return replace(c, config=DynamicConfig(data))


STANDBY_CASES = [
    ("standby leader with the lock streams from the remote", obs(STANDBY_LEADER, standby(cluster(leader=ME))),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "the standby leader with the lock"),
    ("lock holder of a standby cluster never promotes: it follows the remote",
     obs(REPLICA, standby(cluster(leader=ME))),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.FOLLOW), "standby leader"),
    ("a primary in a standby cluster demotes to a standby leader (demote-cluster)",
     obs(PRIMARY, standby(cluster(leader=ME))), (Kind.RENEW_LOCK, Kind.DEMOTE_CLUSTER),
     "cannot be a real primary"),
    ("standby cluster: the healthiest replica takes the lock and follows the remote",
     obs(REPLICA, standby(cluster(leader=None))),
     (Kind.ACQUIRE_LOCK, Kind.FOLLOW, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "not promoting"),
    ("standby cluster: a lagging replica still never takes the lock",
     obs(replace(REPLICA, wal_lsn=3_000_000), standby(cluster(leader=None))), (Kind.NOOP,),
     "maximum_lag_on_failover"),
    ("standby cluster: replicas follow the standby leader", obs(REPLICA, standby(cluster())), (Kind.NOOP,),
     "following node1"),
    ("standby cluster: a stopped lock holder starts following the remote",
     obs(replace(STOPPED, was_primary=True), standby(cluster(leader=ME))), (Kind.RENEW_LOCK, Kind.START_REPLICA),
     "standby leader"),
    ("standby cluster: a restore_command alone makes it a standby cluster",
     obs(REPLICA, standby(cluster(leader=ME), {"restore_command": "cp /arch/%f %p"})),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.FOLLOW), "standby leader"),
    ("a standby_cluster section without host, port or restore_command is ignored",
     obs(REPLICA, standby(cluster(leader=ME), {"primary_slot_name": "x"})),
     (Kind.RENEW_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "promoting"),
    ("promote-cluster: the section removed, the standby leader promotes", obs(STANDBY_LEADER, cluster(leader=ME)),
     (Kind.RENEW_LOCK, Kind.PROMOTE, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS), "promoting"),
    ("standby cluster switchover: the standby leader steps down",
     obs(STANDBY_LEADER, fo(standby(cluster(leader=ME)), leader=ME, member="node3"),
         peers={"node3": peer("node3", 5_000_000)}), (Kind.STEP_DOWN,), "stepping down"),
    ("standby cluster switchover: the candidate takes the lock and follows the remote",
     obs(REPLICA, fo(standby(cluster(leader=None)), leader="node1", member=ME)),
     (Kind.ACQUIRE_LOCK, Kind.FOLLOW, Kind.CLEAR_FAILOVER, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS),
     "requested candidate"),
    ("standby leader that cannot stream from the remote rewinds from it",
     obs(replace(STANDBY_LEADER, streaming=False, stream_stalled=True), standby(cluster(leader=ME))),
     (Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS, Kind.REWIND), "rewinding"),
    ("paused standby cluster: the standby leader keeps its lock",
     obs(STANDBY_LEADER, standby(cluster(leader=ME, pause=True))), (Kind.RENEW_LOCK, Kind.UPDATE_STATUS),
     "standby leader"),
]


@pytest.mark.parametrize("observation,kinds,word", [c[1:] for c in STANDBY_CASES],
                         ids=[c[0] for c in STANDBY_CASES])
def test_decide_standby_cluster(observation: Observation, kinds: tuple[Kind, ...], word: str) -> None:
    decision = decide(observation)
    assert decision.kinds == kinds, decision.reason
    assert word in decision.reason
    for a in decision.actions:
        if a.kind in (Kind.FOLLOW, Kind.START_REPLICA, Kind.REWIND) and observation.holds_lock or a.kind == Kind.FOLLOW and \
                Kind.ACQUIRE_LOCK in decision.kinds:
            assert a.target == REMOTE
