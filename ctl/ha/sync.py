"""Synchronous replication (Patroni's `synchronous_mode`): who is synchronous, who may promote. Pure.

The leader keeps two things in step: `synchronous_standby_names` (whom PostgreSQL waits for before it reports a
commit) and the `sync` key (who may be promoted). Patroni's order of operations (ha.py
`_process_multisync_replication`) keeps them safe at every instant:

- a standby is added to PostgreSQL first, and to the key only once PostgreSQL reports it `sync` and it has
  flushed everything written before the change (`PgView.sync_ready_lsn`);
- a standby is removed from the key first, and from PostgreSQL after.

So every acknowledged commit is on every member the key lists, and only those members (and the former leader)
may be promoted. Each step is an Action (`WRITE_SYNC`, `SET_SYNC_NAMES`); the agent runs them in order and stops
at the first that fails, and the next loop computes the next steps from what it then observes.

Where hactl does better than Patroni 4.1: with `synchronous_mode_strict` and no standby available, Patroni
writes `*`, so any walsender (a `nosync` member, a pg_receivewal) releases the waiting commits (#789), and no
replica may be promoted (#3327). hactl keeps the members the key lists (they hold every acknowledged commit, so
they stay promotable), or a placeholder name no walsender has; and in strict mode it never picks a `nofailover`
member: only a member that may be promoted releases waiting commits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

from ctl.ha.actions import Action, Kind, act
from ctl.ha.state import Observation, Replica
from ctl.model import SyncState

# Patroni (master) writes the same name: a standby name no walsender has, so commits wait.
PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z_0-9$]*$")
_RANK = {"sync": 3, "quorum": 3, "potential": 2}


# ------------------------------------------------------------------------------------ formats (Patroni's strings)


def quote_name(name: str) -> str:
    """A standby name as synchronous_standby_names needs it: double-quoted unless a plain identifier."""
    if _PLAIN.match(name) and name.lower() not in ("first", "any"):
        return name
    return '"' + name.replace('"', '""') + '"'


def standby_names(names: Iterable[str], num: int | None = None, *, quorum: bool = False) -> str:
    """Patroni's value: `a`, `2 (a,b)` (no FIRST), `ANY 1 (a,b)`; '' for no names (not quorum)."""
    quoted = [quote_name(n) for n in sorted(names)]
    if quorum:
        return f"ANY {num if num is not None else 1} ({','.join(quoted) or '*'})"
    if not quoted:
        return ""
    if len(quoted) == 1 and num in (None, 1):
        return quoted[0]
    return f"{num if num is not None else len(quoted)} ({','.join(quoted)})"


@dataclass(frozen=True)
class StandbyNames:
    """A parsed synchronous_standby_names."""

    quorum: bool = False
    num: int = 0
    names: frozenset[str] = frozenset()
    star: bool = False


def _tokens(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            out.append(ch)
            i += 1
        elif ch == '"':
            j, buf = i + 1, []
            while j < len(text):
                if text[j] == '"' and text[j + 1:j + 2] == '"':
                    buf.append('"')
                    j += 2
                elif text[j] == '"':
                    break
                else:
                    buf.append(text[j])
                    j += 1
            out.append('"' + "".join(buf))  # a leading quote marks a quoted name
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in '(),"':
                j += 1
            out.append(text[i:j])
            i = j
    return out


def parse_standby_names(text: str | None) -> StandbyNames:
    """`ANY n (...)` (quorum), `FIRST n (...)`/`n (...)` (priority), a bare list (priority, num 1), `*`."""
    tokens = _tokens(text or "")
    if not tokens:
        return StandbyNames()
    quorum = False
    num = 1
    head = tokens[0].lower()
    if head in ("any", "first") and len(tokens) > 1:
        quorum = head == "any"
        tokens = tokens[1:]
    if tokens and tokens[0].isdigit() and len(tokens) > 1 and tokens[1] == "(":
        num = int(tokens[0])
        tokens = tokens[1:]
    names = [t for t in tokens if t not in ("(", ")", ",")]
    star = "*" in names
    plain = frozenset(t[1:] if t.startswith('"') else t for t in names if t != "*")
    return StandbyNames(quorum=quorum, num=num, names=plain, star=star)


def sync_value(leader: str, names: Iterable[str], quorum: int = 0) -> str:
    """The `sync` key as Patroni writes it: field order leader, quorum, sync_standby; names sorted; null if none."""
    joined = ",".join(sorted(names))
    return json.dumps({"leader": leader, "quorum": quorum, "sync_standby": joined or None}, separators=(",", ":"))


def _write(leader: str, names: Iterable[str], quorum: int = 0) -> Action:
    return act(Kind.WRITE_SYNC, sync_value(leader, names, quorum))


def _set_names(value: str | None) -> Action:
    return Action(Kind.SET_SYNC_NAMES, value)


# ------------------------------------------------------------------------------------ who is synchronous


def _sync(obs: Observation) -> SyncState | None:
    """The `sync` key when it names a leader (Patroni: an empty key has no leader)."""
    sync = obs.cluster.sync if obs.cluster else None
    return sync if sync is not None and sync.leader else None


def _voters(obs: Observation) -> frozenset[str]:
    sync = _sync(obs)
    return frozenset(sync.sync_standby) if sync is not None and sync.leader == obs.name else frozenset()


def candidates(obs: Observation) -> list[str]:
    """Streaming members that may be synchronous, best first (Patroni's `_ReplicaList` order).

    A candidate streams from this primary, is a running member, is not `nosync` (or `sync_priority <= 0`); in
    strict mode it is not `nofailover` either. Order: sync_priority, then already synchronous, then position;
    `nofailover` members last. `maximum_lag_on_syncnode > 0` drops standbys lagging further behind.
    """
    s, cluster = obs.settings, obs.cluster
    assert cluster is not None
    members = {m.name: m for m in cluster.members}
    rows = []
    for r in obs.pg.replication:
        m = members.get(r.name)
        if r.state != "streaming" or m is None or r.name == obs.name or m.state != "running" or m.nosync:
            continue
        if s.synchronous_mode_strict and m.nofailover:
            continue
        rows.append((r, m))
    if s.maximum_lag_on_syncnode > 0 and rows:
        top = max(r.lsn or 0 for r, _ in rows) if len(rows) >= 2 else (obs.pg.wal_lsn or 0)
        rows = [(r, m) for r, m in rows if top - (r.lsn or 0) <= s.maximum_lag_on_syncnode]
    rows.sort(key=lambda rm: rm[0].name)
    rows.sort(key=lambda rm: (rm[1].sync_priority, _RANK.get(rm[0].sync_state, 1), rm[0].lsn or 0), reverse=True)
    rows.sort(key=lambda rm: rm[1].nofailover)
    return [r.name for r, _ in rows]


def _ready(obs: Observation, row: Replica, voters: frozenset[str]) -> bool:
    """PostgreSQL waits for it, and it holds every commit acknowledged before it was added."""
    if row.sync_state not in ("sync", "quorum"):
        return False
    if row.name in voters:
        return True
    ready_at = obs.pg.sync_ready_lsn
    return ready_at is not None and row.lsn is not None and row.lsn >= ready_at


def primary_actions(obs: Observation) -> tuple[list[Action], str]:
    """The leader's sync steps for this loop (after the lock is renewed), and a note for the log ('' if steady).

    Quorum mode: ctl/ha/quorum_rules.py.
    """
    s, pg, me = obs.settings, obs.pg, obs.name
    cluster = obs.cluster
    assert cluster is not None
    if s.synchronous_mode == "quorum":
        from ctl.ha import quorum_rules  # it builds on this module's formats

        return quorum_rules.primary_actions(obs)
    if s.synchronous_mode == "off":
        acts: list[Action] = []
        if cluster.sync is not None:
            acts.append(act(Kind.DELETE_SYNC))
        if pg.sync_names_managed:
            acts.append(_set_names(None))
        return acts, "synchronous mode off: removing the sync key" if acts else ""
    if pg.sync_names is None:  # the probe could not read it: decide nothing on a partial view
        return [], ""
    acts = []
    sync = _sync(obs)
    voters = _voters(obs)
    if sync is None or sync.leader != me:
        acts.append(_write(me, ()))  # this node becomes the latest leader before anything else
    picked = frozenset(candidates(obs)[:max(1, s.synchronous_node_count)])
    current = parse_standby_names(pg.sync_names)
    rows = {r.name: r for r in pg.replication}
    confirmed = frozenset(n for n in picked if n in current.names and not current.quorum
                          and _ready(obs, rows[n], voters))
    in_effect = pg.sync_names_managed

    if s.synchronous_mode_strict and not picked:
        # Commits wait. Only members that may be promoted may release them: the ones the key lists (they hold every
        # acknowledged commit), else a name no walsender has. Never `*`.
        target = standby_names(voters) if voters else PLACEHOLDER
        if pg.sync_names != target or not in_effect:
            acts.append(_set_names(target))
        return acts, "no synchronous standby available: commits wait (synchronous_mode_strict)"
    if picked == voters and voters != confirmed:
        acts.append(_write(me, confirmed))
        voters = confirmed
    target = standby_names(picked)
    if picked == voters and pg.sync_names == target and in_effect:
        return acts, ""
    note = ""
    common = voters & confirmed
    if common != voters:
        acts.append(_write(me, common))  # removal: the key first
        note = f"no longer synchronous: {', '.join(sorted(voters - common))}"
    if pg.sync_names != target or not in_effect:
        acts.append(_set_names(target))  # then PostgreSQL; additions reach the key once confirmed
        if not picked:
            return acts, "no synchronous standby available: committing asynchronously"
        return acts, _join(note, f"synchronous_standby_names = {target}")
    if confirmed and confirmed != common:
        acts.append(_write(me, confirmed))
        note = _join(note, f"synchronous standby: {', '.join(sorted(confirmed))}")
    return acts, note


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def prepromote_actions(obs: Observation) -> list[Action]:
    """Before `pg_ctl promote`: the key names this node as leader, PostgreSQL waits for whom it must.

    The key keeps (strict) the other members it listed, which hold every acknowledged commit, or none;
    synchronous_standby_names waits for those, or the placeholder (strict), or nobody.
    """
    s, me = obs.settings, obs.name
    if s.synchronous_mode == "quorum":
        from ctl.ha import quorum_rules

        return quorum_rules.prepromote_actions(obs)
    if s.synchronous_mode != "on":
        return []
    sync = _sync(obs)
    keep = frozenset(sync.sync_standby) - {me} if (s.synchronous_mode_strict and sync is not None) else frozenset()
    return [_write(me, keep), _set_names(standby_names(keep) if keep else (PLACEHOLDER if s.synchronous_mode_strict
                                                                          else ""))]


def start_primary_actions(obs: Observation) -> list[Action]:
    """The lock holder restarts PostgreSQL as primary: it waits at once for the members the key lists.

    (Patroni starts with nothing, or `*` when strict, until its next cycle; between the two a commit could be
    acknowledged by this node alone while the key still lets another member be promoted.)
    """
    s = obs.settings
    if s.synchronous_mode == "quorum":
        from ctl.ha import quorum_rules

        return quorum_rules.start_primary_actions(obs)
    if s.synchronous_mode != "on":
        return []
    voters = _voters(obs)
    if voters:
        return [_set_names(standby_names(voters))]
    return [_set_names(PLACEHOLDER if s.synchronous_mode_strict else "")]


# ------------------------------------------------------------------------------------ who may promote


def promote_problem(obs: Observation) -> str | None:
    """Why this replica may not take the lock in an election because of synchronous mode, or None."""
    s, sync = obs.settings, _sync(obs)
    if s.synchronous_mode != "on" or sync is None:
        return None
    if obs.name == sync.leader or obs.name in sync.sync_standby:
        return None
    listed = ", ".join(sync.sync_standby) or "no member"
    return f"not a synchronous standby (the sync key lists {listed}; only they hold every acknowledged commit)"


def quorum_race(obs: Observation) -> bool:
    """The election follows the quorum rules (ctl/ha/quorum_rules.py race_problem): quorum mode with a sync key."""
    return obs.settings.synchronous_mode == "quorum" and _sync(obs) is not None


def race_peer(obs: Observation, name: str) -> bool:
    """Whether a peer's position counts in the election. Mode on: only the other synchronous standbys.

    The former leader may be ahead (commits it wrote but nobody acknowledged), and an asynchronous member may
    have received more WAL; neither holds an acknowledged commit a synchronous standby lacks.
    """
    sync = _sync(obs)
    if obs.settings.synchronous_mode != "on" or sync is None:
        return True
    return name in sync.sync_standby
