"""Quorum commit (ctl.ha.quorum): the resolver's transitions, its invariant under random walks, the agent's steps."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from ctl.ha import quorum_rules as quorum, sync
from ctl.ha.actions import Kind
from ctl.ha.decide import decide
from ctl.ha.quorum import QuorumInput, resolve, violation
from ctl.ha.state import HaSettings, Observation, PeerView, PgView, Replica
from ctl.model import Cluster, DynamicConfig, Leader, Member, Status, SyncState

S = frozenset


def run(leader, q, v, n, s, confirmed, active, wanted, me=None):
    steps, _ = resolve(QuorumInput(leader, q, S(v), n, S(s), confirmed, S(active), wanted, me or leader))
    return [("sync" if st.kind == "guc" else "quorum", st.leader, st.num, set(st.names)) for st in steps]


# Patroni's tests/test_quorum.py scenarios (inputs and the transitions Patroni yields, its `restart` left out: hactl
# simply stops and the next loop starts again from what it observes).
A = "a"
ROWS = [
    # add a node to an empty state: the GUC first, the key once it is confirmed
    ((A, 0, "", 0, "", 0, "b", 2), [("sync", A, 1, set("b"))]),
    ((A, 0, "", 1, "b", 1, "b", 2), [("quorum", A, 0, set("b"))]),
    ((A, 0, "", 0, "", 0, "bcde", 2), [("sync", A, 2, set("bcde"))]),
    ((A, 0, "", 2, "bcde", 1, "bcde", 2), [("quorum", A, 3, set("bcde"))]),
    # two nodes
    ((A, 0, "b", 1, "b", 1, "b", 2), []),
    ((A, 0, "b", 1, "b", 1, "bc", 1), [("quorum", A, 1, set("bc")), ("sync", A, 1, set("bc"))]),
    ((A, 0, "b", 1, "b", 1, "bc", 2), [("sync", A, 2, set("bc")), ("quorum", A, 1, set("bc"))]),
    ((A, 1, "bc", 2, "bc", 2, "bc", 2), [("quorum", A, 0, set("bc"))]),
    ((A, 0, "b", 1, "b", 1, "bcde", 2),
     [("sync", A, 2, set("bc")), ("quorum", A, 3, set("bcde")), ("sync", A, 2, set("bcde"))]),
    ((A, 3, "bcde", 2, "bcde", 3, "bcde", 2), [("quorum", A, 2, set("bcde"))]),
    # the primary alone (not strict): the key first, then the GUC
    ((A, 0, "b", 1, "b", 0, "", 1), [("quorum", A, 0, set()), ("sync", A, 0, set())]),
    # swap the only standby
    ((A, 0, "b", 1, "b", 0, "c", 1), [("quorum", A, 0, set()), ("sync", A, 1, set("c"))]),
    ((A, 0, "", 1, "c", 1, "c", 1), [("quorum", A, 0, set("c"))]),
    # interrupted transitions
    ((A, 0, "b", 2, "bc", 1, "b", 2), [("sync", A, 1, set("b"))]),
    ((A, 0, "b", 2, "bc", 1, "bc", 2), [("quorum", A, 1, set("bc"))]),
    ((A, 0, "b", 2, "bc", 1, "bcd", 2), [("quorum", A, 2, set("bcd")), ("sync", A, 2, set("bcd"))]),
    ((A, 0, "b", 2, "bc", 1, "bc", 1), [("quorum", A, 1, set("bc")), ("sync", A, 1, set("bc"))]),
    ((A, 1, "bc", 1, "b", 1, "b", 1), [("quorum", A, 0, set("b"))]),
    ((A, 1, "bc", 1, "b", 1, "bc", 1), [("sync", A, 1, set("bc"))]),
    ((A, 1, "bc", 1, "b", 1, "bcd", 1),
     [("sync", A, 1, set("bc")), ("quorum", A, 2, set("bcd")), ("sync", A, 1, set("bcd"))]),
    ((A, 1, "bc", 1, "b", 1, "bc", 2), [("sync", A, 2, set("bc"))]),
    # remove nodes, raise and lower W
    ((A, 1, "bcde", 3, "bcde", 2, "bc", 1),
     [("sync", A, 3, set("bcd")), ("quorum", A, 1, set("bc")), ("sync", A, 1, set("bc"))]),
    ((A, 2, "bcde", 2, "bcde", 2, "bcde", 3), [("sync", A, 3, set("bcde"))]),
    ((A, 2, "bcde", 3, "bcde", 3, "bcde", 3), [("quorum", A, 1, set("bcde"))]),
    ((A, 2, "bcde", 2, "bcde", 2, "bcdef", 1), [("quorum", A, 4, set("bcdef")), ("sync", A, 1, set("bcdef"))]),
    ((A, 1, "bcdef", 4, "bcdef", 2, "bcd", 2),
     [("sync", A, 4, set("bcde")), ("quorum", A, 1, set("bcd")), ("sync", A, 2, set("bcd"))]),
    ((A, 2, "bcdef", 4, "bcdef", 3, "bcdef", 2), [("quorum", A, 3, set("bcdef")), ("sync", A, 2, set("bcdef"))]),
    # a nosync (or gone) member leaves; a swap
    ((A, 0, "bc", 2, "bc", 1, "b", 2), [("quorum", A, 0, set("b")), ("sync", A, 1, set("b"))]),
    ((A, 0, "bc", 2, "bc", 1, "bd", 2),
     [("quorum", A, 0, set("b")), ("sync", A, 2, set("bd")), ("quorum", A, 1, set("bd"))]),
    # a broken state is repaired with a quorum that covers it
    ((A, 0, "bc", 1, "bc", 1, "bc", 1), [("quorum", A, 1, set("bc"))]),
    ((A, 1, "bc", 2, "bd", 1, "bd", 1), [("quorum", A, 1, set("bd")), ("sync", A, 1, set("bd"))]),
]


@pytest.mark.parametrize("args,expected", ROWS, ids=[str(r[0]) for r in ROWS])
def test_transitions_match_patroni(args, expected) -> None:
    assert run(*args) == expected


# Where hactl waits a loop and Patroni does not: after removing members from the GUC, Patroni lowers the quorum in
# the same cycle, counting as confirmed standbys that caught up with the GUC's previous value only (commits the
# removed ones acknowledged since may be on nobody else). hactl writes the GUC, and lowers the quorum next loop,
# once the remaining standbys confirm against the new value (tests/unit/test_ha_quorum_model.py finds the loss).
HACTL_WAITS = [
    ((A, 2, "bcde", 2, "bcde", 2, "bc", 2), [("sync", A, 2, set("bc"))]),  # Patroni: then quorum 0 of bc
    ((A, 2, "bcde", 2, "bc", 2, "bc", 2), [("quorum", A, 0, set("bc"))]),  # next loop, b and c confirmed
    ((A, 2, "bcde", 2, "bc", 1, "bc", 2), [("quorum", A, 1, set("bc"))]),  # only one of them confirmed
    ((A, 2, "bcde", 2, "bcde", 2, "bc", 1), [("sync", A, 2, set("bc"))]),  # Patroni: then quorum 1, ANY 1
    ((A, 2, "bcde", 2, "bc", 2, "bc", 1), [("quorum", A, 1, set("bc")), ("sync", A, 1, set("bc"))]),
    ((A, 2, "bcde", 2, "bcde", 2, "bcd", 3), [("sync", A, 3, set("bcd"))]),  # Patroni: then quorum 1
    ((A, 2, "bcde", 3, "bcd", 3, "bcd", 3), [("quorum", A, 0, set("bcd"))]),
    # e (in the GUC, gone) stays a voter, with the quorum kept at |V| - confirmed, until it leaves the GUC
    ((A, 1, "bcdef", 4, "bcde", 2, "bcdg", 2),
     [("quorum", A, 2, set("bcde")), ("sync", A, 3, set("bcd")), ("quorum", A, 2, set("bcdg")),
      ("sync", A, 2, set("bcdg"))]),
]


@pytest.mark.parametrize("args,expected", HACTL_WAITS, ids=[str(r[0]) for r in HACTL_WAITS])
def test_transitions_where_hactl_waits_for_confirmation(args, expected) -> None:
    assert run(*args) == expected


@pytest.mark.parametrize("args,expected", [
    # (confirmations are not known after a promotion: None, and the quorum is trusted as Patroni does)
    # a fails, c has the votes: the GUC over the former members before the key moves the leader
    (("a", 2, "bcd", 0, "", None, "", 1, "c"), [("sync", "a", 1, set("abd")), ("quorum", "c", 2, set("abd"))]),
    (("c", 2, "abd", 1, "abd", None, "b", 1), [("sync", "c", 1, set("b")), ("quorum", "c", 0, set("b"))]),
    (("c", 2, "abd", 1, "abd", None, "", 1), [("quorum", "c", 0, set()), ("sync", "c", 0, set())]),
    # a non-voter d promoted: one more acknowledgement
    (("a", 1, "bc", 0, "", None, "", 1, "d"), [("sync", "a", 2, set("abc")), ("quorum", "d", 1, set("abc"))]),
    (("d", 1, "abc", 2, "abc", None, "bc", 1),
     [("sync", "d", 2, set("bc")), ("quorum", "d", 1, set("bc")), ("sync", "d", 1, set("bc"))]),
    # the GUC was already written before the promotion (hactl's and Patroni's prepromote)
    (("a", 1, "bc", 1, "ab", None, "", 1, "c"), [("quorum", "c", 1, set("ab"))]),
    (("c", 1, "ab", 1, "ab", None, "b", 1), [("sync", "c", 1, set("b")), ("quorum", "c", 0, set("b"))]),
])
def test_promotion_moves_the_former_leader_into_the_voters(args, expected) -> None:
    assert run(*args) == expected


def test_the_invariant() -> None:
    assert violation("a", 1, "bc", 1, "bc", "a") is None  # 3 members, 2 acknowledge, 2 elect
    assert "do not overlap" in violation("a", 0, "bc", 1, "bc", "a")  # b acknowledges, c alone elects
    assert "not in the key" in violation("a", 1, "bc", 2, "bd", "a")


# ------------------------------------------------------------------------------------------ property test


def _steady(x: QuorumInput) -> bool:
    n = min(x.wanted, len(x.active))
    return x.sync == x.voters == x.active and x.numsync == n and x.quorum == len(x.active) - n


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_keep_the_invariant_after_every_step_and_converge(seed: int) -> None:
    """Members come and go, W changes, confirmations lag, leaders fail over (prepromote's GUC, then the new
    leader's resolver), and a loop may be cut short after any step: every single write keeps `|V' u S'| <= Q + N + 1` and one set inside the other, and with inputs held still the
    state reaches S = V = A, N = min(W, |A|), Q = |A| - N within a few loops."""
    rnd = random.Random(seed)
    x = QuorumInput("a", 0, S(), 0, S(), 0, S(), 1, "a")
    for _ in range(60):
        if x.voters and rnd.random() < 0.2:  # the leader dies; a member wins the race and writes the GUC first
            me = rnd.choice(sorted(x.voters) + [n for n in "abcdef" if n not in x.voters and n != x.leader])
            acts = quorum.prepromote_actions(Observation(
                me, 0.0, QUORUM, PgView(), cluster(leader=None, sync_key=key(x.leader, *x.voters, q=x.quorum))))
            parsed = sync.parse_standby_names(acts[0].target)
            x = replace(x, me=me, numsync=parsed.num if parsed.names else 0, sync=parsed.names, confirmed=0)
            assert violation(x.leader, x.quorum, x.voters, x.numsync, x.sync, x.me) is None, x
        active = S(n for n in "abcdef" if n != x.me and rnd.random() < 0.6)
        x = replace(x, active=active, wanted=rnd.choice([1, 1, 2, 3]))
        for loop in range(8):
            steps, note = resolve(replace(x, confirmed=rnd.randint(0, len(x.sync & x.active))))
            assert "unsafe" not in note, (x, note)
            cut = len(steps) if loop > 3 or rnd.random() < 0.5 else rnd.randint(0, len(steps))
            for st in steps[:cut]:
                if st.kind == "key":
                    x = replace(x, leader=st.leader, quorum=st.num, voters=st.names)
                else:
                    x = replace(x, numsync=st.num, sync=st.names)
                assert violation(x.leader, x.quorum, x.voters, x.numsync, x.sync, x.me) is None, (x, st)
        # held still with everyone confirmed: steady
        for _ in range(6):
            steps, _ = resolve(replace(x, confirmed=len(x.sync & x.active)))
            for st in steps:
                x = replace(x, leader=st.leader, quorum=st.num, voters=st.names) if st.kind == "key" else \
                    replace(x, numsync=st.num, sync=st.names)
        assert _steady(x), x


# ------------------------------------------------------------------------------------------ the agent's steps

ME = "node1"
QUORUM = HaSettings(ttl=30, loop_wait=10, retry_timeout=10, synchronous_mode="quorum")
LSN = 5_000_000


def member(name: str, **kw) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:{5432 + int(name[-1])}/postgres",
                  api_url=f"http://127.0.0.1:{8008 + int(name[-1])}/patroni", state="running", **kw)


def cluster(leader: str | None = ME, sync_key: SyncState | None = None, tags: dict | None = None) -> Cluster:
    tags = tags or {}
    return Cluster(scope="demo", initialize="42", config=DynamicConfig({"synchronous_mode": "quorum"}),
                   leader=Leader(leader) if leader else None,
                   members=tuple(member(n, tags=tags.get(n, {})) for n in ("node1", "node2", "node3")),
                   sync=sync_key, status=Status(optime=LSN))


def key(leader: str, *names: str, q: int = 0) -> SyncState:
    return SyncState(leader=leader, sync_standby=tuple(sorted(names)), quorum=q, mod_revision=7)


def primary(*rows: Replica, names: str | None = "", ready: int | None = LSN) -> PgView:
    return PgView(running=True, in_recovery=False, timeline=1, wal_lsn=LSN, data_dir_empty=False,
                  system_identifier="42", replication=rows, sync_names=names, sync_names_managed=True,
                  sync_ready_lsn=ready)


def row(name: str, sync_state: str = "quorum") -> Replica:
    return Replica(name=name, sync_state=sync_state, lsn=LSN)


def obs(pg: PgView, c: Cluster, settings: HaSettings = QUORUM, name: str = ME, peers: dict | None = None):
    return Observation(name=name, now=100.0, settings=settings, pg=pg, cluster=c, peers=peers or {})


def steps(o: Observation) -> list:
    acts, _ = sync.primary_actions(o)
    return [(a.kind.value, json.loads(a.target) if a.kind == Kind.WRITE_SYNC else a.target) for a in acts]


def kv(leader: str, q: int, names: str | None) -> tuple:
    return ("write_sync", {"leader": leader, "quorum": q, "sync_standby": names})


def test_three_nodes_w1_reach_any_1_and_quorum_1() -> None:
    two = (row("node2", "async"), row("node3", "async"))
    assert steps(obs(primary(*two), cluster())) == [kv(ME, 0, None), ("set_sync_names", "ANY 1 (node2,node3)")]
    assert steps(obs(primary(*two, names="ANY 1 (node2,node3)", ready=LSN + 1),
                     cluster(sync_key=key(ME)))) == []  # nobody confirmed yet: wait
    on = (row("node2"), row("node3"))
    assert steps(obs(primary(*on, names="ANY 1 (node2,node3)"), cluster(sync_key=key(ME)))) == \
        [kv(ME, 1, "node2,node3")]
    assert steps(obs(primary(*on, names="ANY 1 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3", q=1)))) \
        == []


def test_raising_w_writes_the_key_after_the_guc_and_lowering_it_before() -> None:
    on = (row("node2"), row("node3"))
    w2 = replace(QUORUM, synchronous_node_count=2)
    assert steps(obs(primary(*on, names="ANY 1 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3", q=1)),
                     w2)) == [("set_sync_names", "ANY 2 (node2,node3)")]
    # next loop, both confirmed against ANY 2 (Patroni lowers the quorum in the same cycle)
    assert steps(obs(primary(*on, names="ANY 2 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3", q=1)),
                     w2)) == [kv(ME, 0, "node2,node3")]
    unconfirmed = (row("node2"), Replica("node3", sync_state="quorum", lsn=LSN - 1))
    assert steps(obs(primary(*unconfirmed, names="ANY 2 (node2,node3)"),
                     cluster(sync_key=key(ME, "node2", "node3", q=1)), w2)) == []
    assert steps(obs(primary(*on, names="ANY 2 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3")))) == \
        [kv(ME, 1, "node2,node3"), ("set_sync_names", "ANY 1 (node2,node3)")]


def test_a_nosync_member_leaves_both() -> None:
    on = (row("node2"), row("node3"))
    c = cluster(sync_key=key(ME, "node2", "node3", q=1), tags={"node3": {"nosync": True}})
    assert steps(obs(primary(*on, names="ANY 1 (node2,node3)"), c)) == [("set_sync_names", "ANY 1 (node2)")]
    assert steps(obs(primary(*on, names="ANY 1 (node2)"), c)) == [kv(ME, 0, "node2")]  # once node2 confirms


def test_no_standby_not_strict_commits_asynchronously() -> None:
    assert steps(obs(primary(names="ANY 1 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3", q=1)))) == \
        [kv(ME, 0, None), ("set_sync_names", "")]


def test_strict_with_no_standby_keeps_the_voters_or_the_placeholder_never_star() -> None:
    strict = replace(QUORUM, synchronous_mode_strict=True)
    assert steps(obs(primary(names="ANY 1 (node2,node3)"), cluster(sync_key=key(ME, "node2", "node3", q=1)),
                     strict)) == []
    assert steps(obs(primary(names=""), cluster(sync_key=key(ME, "node2", "node3", q=1)), strict)) == \
        [("set_sync_names", "ANY 1 (node2,node3)")]
    assert steps(obs(primary(names=""), cluster(sync_key=key(ME)), strict)) == \
        [("set_sync_names", f"ANY 1 ({sync.PLACEHOLDER})")]
    assert steps(obs(primary(names=""), cluster(), strict)) == \
        [kv(ME, 0, None), ("set_sync_names", f"ANY 1 ({sync.PLACEHOLDER})")]


def test_switching_from_mode_on_rewrites_first_as_any() -> None:
    on = (row("node2", "sync"), row("node3", "potential"))
    assert steps(obs(primary(*on, names="node2", ready=None), cluster(sync_key=key(ME, "node2")))) == \
        [kv(ME, 1, "node2,node3"), ("set_sync_names", "ANY 1 (node2,node3)")]


def test_prepromote_writes_any_n_over_the_former_members() -> None:
    c = cluster(leader=None, sync_key=key("node1", "node2", "node3", q=1))
    assert quorum.prepromote_actions(obs(primary(), c, name="node2"))[0].target == "ANY 1 (node1,node3)"
    c = cluster(leader=None, sync_key=key("node1", "node2", q=0))
    assert quorum.prepromote_actions(obs(primary(), c, name="node3"))[0].target == "ANY 2 (node1,node2)"
    strict = replace(QUORUM, synchronous_mode_strict=True)
    assert quorum.prepromote_actions(obs(primary(), cluster(leader=None), strict, name="node2"))[0].target == \
        f"ANY 1 ({sync.PLACEHOLDER})"


def test_restart_in_place_waits_for_the_voters() -> None:
    c = cluster(sync_key=key(ME, "node2", "node3", q=1))
    assert [a.target for a in sync.start_primary_actions(obs(primary(), c))] == ["ANY 1 (node2,node3)"]


REPLICA = PgView(running=True, in_recovery=True, timeline=1, wal_lsn=LSN, streaming=True, upstream="node1",
                 data_dir_empty=False, system_identifier="42")


def peer(name: str, lsn: int | None = LSN, **kw) -> PeerView:
    return PeerView(name, reachable=lsn is not None, wal_lsn=lsn, **kw)


@pytest.mark.parametrize("sync_key,me,peers,promotes", [
    (key("node1", "node2", "node3", q=1), "node2", {"node3": peer("node3")}, True),  # 1 vote >= Q 1
    (key("node1", "node2", "node3", q=1), "node2", {"node3": peer("node3", None)}, False),  # no vote
    (key("node1", "node2", "node3", q=1), "node2", {"node3": peer("node3", LSN + 1)}, False),  # node3 ahead
    (key("node1", "node2", "node3", q=1), "node2", {"node3": peer("node3", nofailover=True)}, False),  # no vote
    (key("node1", "node2", q=0), "node3", {"node2": peer("node2")}, True),  # non-voter: Q+1 = 1 vote
    (key("node1", "node2", q=0), "node3", {"node2": peer("node2", None)}, False),
    (key("node1", "node2", q=0), "node2", {"node3": peer("node3", LSN + 9)}, False),  # anyone ahead wins
    (key("node1", "node2", q=0), "node2", {"node1": peer("node1", LSN + 9)}, True),  # the former leader: ignored
    (key("node2", "node1", "node3", q=1), "node2", {}, True),  # the former leader, nobody ahead
])
def test_who_may_promote_in_quorum_mode(sync_key, me, peers, promotes) -> None:
    d = decide(obs(REPLICA, cluster(leader=None, sync_key=sync_key), name=me, peers=peers))
    assert (Kind.PROMOTE in d.kinds) == promotes, d.reason
    if promotes:
        assert d.kinds.index(Kind.SET_SYNC_NAMES) < d.kinds.index(Kind.PROMOTE)


# ------------------------------------------------------------------------------------------ switchover


def test_a_switchover_goes_only_to_a_quorum_standby_and_needs_quorum_plus_one_healthy():
    from ctl.ha import eligibility as el

    cands = [el.Candidate(n, member(n), True, wal_lsn=LSN) for n in ("node2", "node3")]
    s = el.Situation("switchover", ME, LSN, synchronous_mode="quorum", sync_standbys=frozenset({"node2", "node3"}),
                     quorum=1)
    assert el.choose(s, cands).chosen == "node2"
    down = [cands[0], el.Candidate("node3", member("node3"), reachable=False)]
    assert el.choose(s, down).chosen is None
    assert "quorum requirement 1 cannot be reached: 1 healthy quorum standby, 2 needed" in el.choose(s, down).why
    assert el.choose(replace(s, candidate="node2"), down).chosen == "node2"  # a named candidate: #3307/#3310
    s1 = replace(s, sync_standbys=frozenset({"node2"}), quorum=0)
    assert el.choose(replace(s1, candidate="node3"), cands).chosen is None
    assert "is not a quorum standby" in el.choose(replace(s1, candidate="node3"), cands).why
    assert el.choose(replace(s1, action="failover", candidate="node3"), cands).chosen == "node3"


def test_a_crashed_quorum_primary_hands_over_only_when_a_quorum_can_elect():
    from ctl.ha.decide import failover_possible

    down = PgView(running=False, data_dir_empty=False, system_identifier="42", was_primary=True, crashed=True)
    s0 = replace(QUORUM, primary_start_timeout=0)
    assert failover_possible(obs(down, cluster(sync_key=key(ME, "node2", "node3", q=1)), s0))
    assert not failover_possible(obs(down, cluster(sync_key=key(ME, "node2", q=1 + 1)), s0))
    assert not failover_possible(obs(down, cluster(sync_key=key(ME, "node2", "node3", q=1),
                                                   tags={"node3": {"nofailover": True}}), s0))


def test_cli_switchover_in_quorum_mode_names_the_quorum_standbys():
    from ctl.errors import CtlError
    from ctl.services.operations import plan_switchover

    c = replace(cluster(sync_key=key(ME, "node2", q=0)), config=DynamicConfig({"synchronous_mode": "quorum"}))
    assert plan_switchover(c, None, "node2").candidate == "node2"
    with pytest.raises(CtlError, match="Member node3 is not a quorum standby; in quorum mode a switchover can go "
                                       "only to one of: node2"):
        plan_switchover(c, None, "node3")
