"""Synchronous replication rules (ctl.ha.sync): Patroni's strings, the order of operations, who may promote."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ctl.ha import sync
from ctl.ha.actions import Kind
from ctl.ha.decide import decide
from ctl.ha.state import HaSettings, Observation, PeerView, PgView, Replica
from ctl.model import Cluster, DynamicConfig, Leader, Member, Status, SyncState

ME = "node1"
ON = HaSettings(ttl=30, loop_wait=10, retry_timeout=10, synchronous_mode="on")
STRICT = replace(ON, synchronous_mode_strict=True)
LSN = 5_000_000


def member(name: str, **kw) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:{5432 + int(name[-1])}/postgres",
                  api_url=f"http://127.0.0.1:{8008 + int(name[-1])}/patroni", state=kw.pop("state", "running"), **kw)


def cluster(leader: str | None = ME, sync_key: SyncState | None = None, tags: dict | None = None) -> Cluster:
    tags = tags or {}
    return Cluster(scope="demo", initialize="42", config=DynamicConfig({"synchronous_mode": True}),
                   leader=Leader(leader) if leader else None,
                   members=tuple(member(n, tags=tags.get(n, {})) for n in ("node1", "node2", "node3")),
                   sync=sync_key, status=Status(optime=LSN))


def key(leader: str, *names: str, quorum: int = 0) -> SyncState:
    return SyncState(leader=leader, sync_standby=tuple(sorted(names)), quorum=quorum, mod_revision=7)


def row(name: str, sync_state: str = "async", lsn: int = LSN, state: str = "streaming") -> Replica:
    return Replica(name=name, state=state, sync_state=sync_state, lsn=lsn)


def primary(*rows: Replica, names: str | None = "", managed: bool = True, ready: int | None = LSN) -> PgView:
    return PgView(running=True, in_recovery=False, timeline=1, wal_lsn=LSN, data_dir_empty=False,
                  system_identifier="42", replication=rows, sync_names=names, sync_names_managed=managed,
                  sync_ready_lsn=ready)


def obs(pg: PgView, c: Cluster, settings: HaSettings = ON, name: str = ME, peers: dict | None = None) -> Observation:
    return Observation(name=name, now=100.0, settings=settings, pg=pg, cluster=c, peers=peers or {})


def steps(o: Observation) -> list[tuple[str, object]]:
    acts, _ = sync.primary_actions(o)
    return [(a.kind.value, json.loads(a.target) if a.kind == Kind.WRITE_SYNC else a.target) for a in acts]


def w(leader: str, names: str | None) -> tuple[str, object]:
    return ("write_sync", {"leader": leader, "quorum": 0, "sync_standby": names})


# ------------------------------------------------------------------------------------------------ formats

@pytest.mark.parametrize("names,num,quorum,expected", [
    (["node3"], None, False, "node3"),
    (["postgres-1"], None, False, '"postgres-1"'),
    (["node2", "node1"], None, False, "2 (node1,node2)"),
    (["b", "a"], 1, True, "ANY 1 (a,b)"),
    (["postgres-0", "postgres-2"], 1, True, 'ANY 1 ("postgres-0","postgres-2")'),
    (["first"], None, False, '"first"'),
    (["Any"], None, False, '"Any"'),
    ([], None, False, ""),
])
def test_standby_names_are_patronis_strings(names, num, quorum, expected) -> None:
    assert sync.standby_names(names, num, quorum=quorum) == expected


@pytest.mark.parametrize("text,quorum,num,names,star", [
    ("", False, 0, set(), False),
    ("node3", False, 1, {"node3"}, False),
    ('"postgres-1"', False, 1, {"postgres-1"}, False),
    ("2 (node1,node2)", False, 2, {"node1", "node2"}, False),
    ("FIRST 2 (a, b)", False, 2, {"a", "b"}, False),
    ('ANY 1 ("postgres-0","postgres-2")', True, 1, {"postgres-0", "postgres-2"}, False),
    ("*", False, 1, set(), True),
    ("a, b", False, 1, {"a", "b"}, False),
])
def test_parse_standby_names(text, quorum, num, names, star) -> None:
    got = sync.parse_standby_names(text)
    assert (got.quorum, got.num, set(got.names), got.star) == (quorum, num if text else 0, names, star)


def test_sync_key_value_is_byte_identical_to_patroni() -> None:
    assert sync.sync_value("node2", ["node3"]) == '{"leader":"node2","quorum":0,"sync_standby":"node3"}'
    assert sync.sync_value("node1", []) == '{"leader":"node1","quorum":0,"sync_standby":null}'
    assert sync.sync_value("postgres-1", ["postgres-2", "postgres-0"], 1) == \
        '{"leader":"postgres-1","quorum":1,"sync_standby":"postgres-0,postgres-2"}'


# ------------------------------------------------------------------------------------------------ mode on

ON_CASES = [
    ("empty key: become the latest leader first", obs(primary(), cluster()),
     [w(ME, None)]),
    ("key of another leader is rewritten (inconsistent)", obs(primary(), cluster(sync_key=key("node2", "node1"))),
     [w(ME, None)]),
    ("a streaming standby goes to PostgreSQL first, not to the key",
     obs(primary(row("node2")), cluster(sync_key=key(ME))),
     [("set_sync_names", "node2")]),
    ("the key follows once the standby is sync and caught up",
     obs(primary(row("node2", "sync"), names="node2"), cluster(sync_key=key(ME))),
     [w(ME, "node2")]),
    ("sync but not yet caught up: the key waits",
     obs(primary(row("node2", "sync", lsn=LSN - 1), names="node2"), cluster(sync_key=key(ME))),
     []),
    ("steady state: nothing to do",
     obs(primary(row("node2", "sync"), row("node3"), names="node2"), cluster(sync_key=key(ME, "node2"))),
     []),
    ("after an agent restart the value is set again even when it looks right",
     obs(primary(row("node2", "sync"), names="node2", managed=False), cluster(sync_key=key(ME, "node2"))),
     [("set_sync_names", "node2")]),
    ("the sync standby stops: the key first, then PostgreSQL falls back to async (not strict)",
     obs(primary(names="node2"), cluster(sync_key=key(ME, "node2"))),
     [w(ME, None), ("set_sync_names", "")]),
    ("swap to another standby: removal from the key before the new name",
     obs(primary(row("node3"), names="node2"), cluster(sync_key=key(ME, "node2"))),
     [w(ME, None), ("set_sync_names", "node3")]),
    ("nosync members are never picked",
     obs(primary(row("node2"), row("node3")), cluster(sync_key=key(ME), tags={"node2": {"nosync": True}})),
     [("set_sync_names", "node3")]),
    ("sync_priority 0 means nosync; a higher priority wins",
     obs(primary(row("node2"), row("node3", lsn=LSN - 10)),
         cluster(sync_key=key(ME), tags={"node3": {"sync_priority": 5}})),
     [("set_sync_names", "node3")]),
    ("a member that is not running is not a candidate",
     obs(primary(row("node2")), replace(cluster(sync_key=key(ME)), members=(member("node1"), member(
         "node2", state="starting"), member("node3")))),
     []),
    ("synchronous_node_count 2: `2 (a,b)`",
     obs(primary(row("node2"), row("node3")), cluster(sync_key=key(ME)), replace(ON, synchronous_node_count=2)),
     [("set_sync_names", "2 (node2,node3)")]),
    ("maximum_lag_on_syncnode drops a lagging standby",
     obs(primary(row("node2", lsn=LSN - 5000), row("node3")), cluster(sync_key=key(ME)),
         replace(ON, maximum_lag_on_syncnode=1000)),
     [("set_sync_names", "node3")]),
    ("strict, nobody streams, nobody listed: a placeholder, never *",
     obs(primary(), cluster(sync_key=key(ME)), STRICT),
     [("set_sync_names", sync.PLACEHOLDER)]),
    ("strict, the listed standby stops: it stays listed and PostgreSQL keeps waiting for it",
     obs(primary(names="node2"), cluster(sync_key=key(ME, "node2")), STRICT),
     []),
    ("strict: a nosync member streaming does not release the waiting commits",
     obs(primary(row("node3")), cluster(sync_key=key(ME, "node2"), tags={"node3": {"nosync": True}}), STRICT),
     [("set_sync_names", "node2")]),
    ("strict: a nofailover member is never synchronous (it may not be promoted)",
     obs(primary(row("node3")), cluster(sync_key=key(ME), tags={"node3": {"nofailover": True}}), STRICT),
     [("set_sync_names", sync.PLACEHOLDER)]),
    ("not strict: a nofailover member is picked, last (Patroni)",
     obs(primary(row("node3")), cluster(sync_key=key(ME), tags={"node3": {"nofailover": True}})),
     [("set_sync_names", "node3")]),
    ("mode off: delete the key, restore the configured value",
     obs(primary(names="node2"), cluster(sync_key=key(ME, "node2")), replace(ON, synchronous_mode="off")),
     [("delete_sync", None), ("set_sync_names", None)]),
    ("synchronous_standby_names unknown (probe failed): nothing is changed",
     obs(primary(names=None), cluster(sync_key=key(ME, "node2"))), []),
    ("mode off and never managed: nothing", obs(primary(managed=False), cluster(),
                                               replace(ON, synchronous_mode="off")), []),
]


@pytest.mark.parametrize("observation,expected", [c[1:] for c in ON_CASES], ids=[c[0] for c in ON_CASES])
def test_mode_on_steps(observation: Observation, expected) -> None:
    assert steps(observation) == expected


def test_order_of_operations_never_lists_an_unconfirmed_standby() -> None:
    """Walk a standby joining, then leaving: at no step is a name in the key without PostgreSQL waiting for it."""
    c = cluster(sync_key=key(ME))
    names = ""
    trace = []
    for phase in ("join", "join", "join", "leave", "leave"):
        rows = (row("node2", "sync" if "node2" in names else "async"),) if phase == "join" else ()
        o = obs(primary(*rows, names=names), c)
        for a in sync.primary_actions(o)[0]:
            if a.kind == Kind.SET_SYNC_NAMES:
                names = a.target or ""
            elif a.kind == Kind.WRITE_SYNC:
                listed = json.loads(a.target)["sync_standby"]
                c = replace(c, sync=key(ME, *(listed.split(",") if listed else ())))
            assert set(c.sync.sync_standby) <= set(sync.parse_standby_names(names).names), (phase, names, c.sync)
            trace.append((names, c.sync.sync_standby))
    assert ("node2", ("node2",)) in trace and trace[-1] == ("", ())


# ------------------------------------------------------------------------------------------------ promotion

REPLICA = PgView(running=True, in_recovery=True, timeline=1, wal_lsn=LSN, streaming=True, upstream="node1",
                 data_dir_empty=False, system_identifier="42")


def test_prepromote_writes_the_key_before_promoting() -> None:
    d = decide(obs(REPLICA, cluster(leader=None, sync_key=key("node1", "node2")), name="node2"))
    assert d.kinds[:4] == (Kind.ACQUIRE_LOCK, Kind.WRITE_SYNC, Kind.SET_SYNC_NAMES, Kind.PROMOTE)
    assert d.actions[1].target == '{"leader":"node2","quorum":0,"sync_standby":null}'
    assert d.actions[2].target == ""


def test_strict_prepromote_keeps_the_other_listed_members() -> None:
    d = decide(obs(REPLICA, cluster(leader=None, sync_key=key("node1", "node2", "node3")), STRICT, name="node2"))
    assert d.actions[1].target == '{"leader":"node2","quorum":0,"sync_standby":"node3"}'
    assert d.actions[2].target == "node3"
    d = decide(obs(REPLICA, cluster(leader=None, sync_key=key("node1", "node2")), STRICT, name="node2"))
    assert d.actions[2].target == sync.PLACEHOLDER


def test_restarting_primary_waits_for_the_listed_members_at_once() -> None:
    stopped = PgView(running=False, data_dir_empty=False, system_identifier="42", was_primary=True)
    d = decide(obs(stopped, cluster(sync_key=key(ME, "node2"))))
    assert d.kinds == (Kind.RENEW_LOCK, Kind.SET_SYNC_NAMES, Kind.START_PRIMARY)
    assert d.actions[1].target == "node2"


def test_an_async_replica_ahead_does_not_block_the_sync_standby() -> None:
    peers = {"node3": PeerView("node3", reachable=True, wal_lsn=LSN + 100)}
    d = decide(obs(REPLICA, cluster(leader=None, sync_key=key("node1", "node2")), name="node2", peers=peers))
    assert Kind.PROMOTE in d.kinds, d.reason
