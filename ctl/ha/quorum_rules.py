"""Quorum commit, the leader's side and the election: what ctl/ha/quorum.py's resolver plans, as agent actions. Pure.

- `primary_actions`: the leader's writes this loop (`ANY N (S)` and the `sync` key), from pg_stat_replication,
  the member keys (nosync, nofailover) and the confirmations (`PgView.sync_ready_lsn`);
- `prepromote_actions`, `start_primary_actions`: what PostgreSQL waits for before a promotion, and when a crashed
  primary restarts in place;
- `race_problem`: Patroni's quorum votes in an election.
"""

from __future__ import annotations

from typing import Iterable

from ctl.ha.actions import Action, Kind, act
from ctl.ha.quorum import QuorumInput, resolve
from ctl.ha.state import Observation
from ctl.ha.sync import PLACEHOLDER, candidates, parse_standby_names, quote_name, sync_value
from ctl.model import SyncState


def standby_names(num: int, names: Iterable[str], strict: bool) -> str:
    """`ANY n (a,b)`; '' with nobody to wait for; `ANY 1 (placeholder)` in strict mode then (never `*`)."""
    names = sorted(names)
    if not names or num <= 0:
        return f"ANY 1 ({PLACEHOLDER})" if strict else ""
    return f"ANY {num} ({','.join(quote_name(n) for n in names)})"


def key_value(leader: str, quorum: int, names: Iterable[str]) -> str:
    return sync_value(leader, names, quorum)


def _sync(obs: Observation) -> SyncState | None:
    sync = obs.cluster.sync if obs.cluster else None
    return sync if sync is not None and sync.leader else None


def active(obs: Observation) -> list[str]:
    """Patroni's quorum candidates: every eligible streaming member; `nofailover` ones only while fewer than
    synchronous_node_count others stream (hactl's strict mode never takes them: ctl.ha.sync.candidates)."""
    assert obs.cluster is not None
    names = candidates(obs)
    nofailover = {m.name for m in obs.cluster.members if m.nofailover}
    picked = [n for n in names if n not in nofailover]
    for n in names:
        if n in nofailover and len(picked) < obs.settings.synchronous_node_count:
            picked.append(n)
    return picked


def _confirmed(obs: Observation, names: frozenset[str]) -> int | None:
    ready_at = obs.pg.sync_ready_lsn
    if ready_at is None:
        return None
    return sum(1 for r in obs.pg.replication if r.name in names and r.sync_state in ("quorum", "sync")
               and r.lsn is not None and r.lsn >= ready_at)


def primary_actions(obs: Observation) -> tuple[list[Action], str]:
    """The leader's quorum steps for this loop, and a note for the log ('' when steady)."""
    s, pg, me = obs.settings, obs.pg, obs.name
    if pg.sync_names is None:
        return [], ""
    sync = _sync(obs)
    acts: list[Action] = []
    if sync is None:  # this node becomes the latest leader before anything else
        acts.append(act(Kind.WRITE_SYNC, key_value(me, 0, ())))
        sync = SyncState(leader=me, sync_standby=(), quorum=0)
    current = parse_standby_names(pg.sync_names)
    names = current.names - {PLACEHOLDER}
    numsync = min(current.num, len(names)) if names else 0
    voters = frozenset(sync.sync_standby)
    quorum = sync.quorum or 0
    cands = frozenset(active(obs))
    in_effect = pg.sync_names_managed
    if not cands and s.synchronous_mode_strict and sync.leader == me:
        # commits wait: only members the key lists (they hold every acknowledged commit) may release them
        target = standby_names(max(1, len(voters) - quorum), voters, True)
        if pg.sync_names != target or not in_effect:
            acts.append(Action(Kind.SET_SYNC_NAMES, target))
        return acts, "no quorum standby available: commits wait (synchronous_mode_strict)"
    # only candidates count as confirmed: a nosync or lagging member may be on its way out of the GUC
    confirmed = _confirmed(obs, names & cands)
    steps, note = resolve(QuorumInput(sync.leader, quorum, voters, numsync, names, confirmed, cands,
                                      max(1, s.synchronous_node_count), me, s.synchronous_mode_strict))
    for st in steps:
        if st.kind == "key":
            acts.append(act(Kind.WRITE_SYNC, key_value(st.leader, st.num, st.names)))
        else:
            acts.append(Action(Kind.SET_SYNC_NAMES, standby_names(st.num, st.names, s.synchronous_mode_strict)))
    if not any(a.kind == Kind.SET_SYNC_NAMES for a in acts):
        # FIRST -> ANY after a switch from mode on, or not yet set by this agent: rewrite the same N of S
        target = standby_names(numsync, names, s.synchronous_mode_strict)
        if (pg.sync_names != target or not in_effect) and not (current.star and not s.synchronous_mode_strict):
            acts.append(Action(Kind.SET_SYNC_NAMES, target))
    if steps:
        last = {st.kind: st for st in steps}
        parts = []
        if "guc" in last:
            value = standby_names(last["guc"].num, last["guc"].names, s.synchronous_mode_strict)
            parts.append(f"synchronous_standby_names = {value or repr('')}")
        if "key" in last:
            k = last["key"]
            parts.append(f"quorum {k.num} of ({', '.join(sorted(k.names))})")
        note = "; ".join([note] + parts if note else parts)
    if not cands and not s.synchronous_mode_strict and not voters and not names and acts:
        note = note or "no quorum standby available: committing asynchronously"
    return acts, note


def prepromote_actions(obs: Observation) -> list[Action]:
    """Before `pg_ctl promote`: `ANY N (S)` over the key's members minus this node, so that any commit this node
    acknowledges reaches every quorum the unchanged key allows; the failover phase rewrites the key after."""
    strict = obs.settings.synchronous_mode_strict
    sync = _sync(obs)
    if sync is None:
        return [Action(Kind.SET_SYNC_NAMES, standby_names(0, (), strict))]
    members = frozenset(sync.sync_standby) | {sync.leader}
    num = len(members) - (sync.quorum or 0) - 1
    if obs.name in members:
        members = members - {obs.name}
    else:  # a non-voter that won (or was named): one more acknowledgement
        num += 1
    if strict:
        num = max(num, 1)
    return [Action(Kind.SET_SYNC_NAMES, standby_names(num, members, strict))]


def start_primary_actions(obs: Observation) -> list[Action]:
    """The lock holder restarts PostgreSQL as primary: `ANY N (V)` as the key left it (N = |V| - Q), so that no
    commit is acknowledged that a quorum could miss; nothing (or the placeholder when strict) without voters."""
    strict = obs.settings.synchronous_mode_strict
    sync = _sync(obs)
    if sync is None or sync.leader != obs.name:
        return [Action(Kind.SET_SYNC_NAMES, standby_names(0, (), strict))]
    voters = frozenset(sync.sync_standby)
    return [Action(Kind.SET_SYNC_NAMES, standby_names(len(voters) - (sync.quorum or 0), voters, strict))]


# ------------------------------------------------------------------------------------------ who may promote


def race_problem(obs: Observation) -> str | None:
    """Patroni's quorum race for a replica without a leader (its own lag and WAL position already checked):
    the reachable members of the key (leader and voters), not `nofailover`, running, at or behind this node, each
    give a vote; a voter needs Q votes, any other member Q+1; the former leader needs none if nobody is ahead.
    Anyone else ahead wins instead (the former leader being ahead is ignored)."""
    sync = _sync(obs)
    assert sync is not None and obs.pg.wal_lsn is not None
    mine, q = obs.pg.wal_lsn, sync.quorum or 0
    voting = frozenset(sync.sync_standby) | {sync.leader}
    votes = 0 if obs.name in voting else -1
    ahead = 0
    for peer in sorted(obs.peers.values(), key=lambda p: p.name):
        if peer.name == obs.name or not peer.reachable or peer.nofailover:
            continue
        if peer.is_primary:
            return f"{peer.name} still runs as primary"
        wal = peer.wal_lsn or 0
        if wal > mine:
            ahead += 1
            if peer.name != sync.leader:
                return f"{peer.name} is ahead ({wal} > {mine})"
            continue
        if wal <= 0:
            continue
        low = wal == mine and peer.failover_priority > obs.settings.failover_priority and peer.name != sync.leader
        if low and peer.name in voting:
            return f"deferring to {peer.name} (same position, higher failover_priority)"
        if peer.name in voting:
            votes += 1
    if votes >= q or (ahead == 0 and sync.leader == obs.name):
        return None
    got, need = (votes, q) if obs.name in voting else (votes + 1, q + 1)
    return (f"not enough quorum votes: {got} of {need} needed from the members of the sync key "
            f"({', '.join(sorted(voting - {obs.name}))}, quorum {q})")
