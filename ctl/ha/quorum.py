"""Quorum commit (`synchronous_mode: quorum`): the resolver that moves the `sync` key and `ANY N (S)` in step. Pure.

Two pairs describe the state, both read "any n of the set":

- `synchronous_standby_names = ANY N (S)`: a commit is acknowledged once the leader and N members of S hold it;
- the `sync` key `{leader: L, quorum: Q, sync_standby: V}`: a member may promote once Q+1 of L and V (Q members
  of V when it is one of them) report a WAL position no further than its own.

No acknowledged commit is lost as long as any set that can acknowledge a commit (the leader and N of S) overlaps
any set that can elect a new leader (Q+1 of V and L), that is `|V' ∪ S'| <= Q + N + 1` with V' = V ∪ {L} and
S' = S ∪ {me}; and, because the two are written one after the other, one of V', S' contains the other. The
resolver (Patroni's `QuorumStateResolver` rules, docs/agent.md) plans the writes that reach the steady state
`S = V = A` (the active candidates), `N = min(W, |A|)`, `Q = |A| - N` and checks the invariant before every
single step: it raises a number before it lowers the other, adds a member to the key before the GUC unless the
GUC is empty, and removes it from the GUC first unless the GUC would become empty. A member added to S counts
as a holder of older commits only once it is confirmed (PostgreSQL reports it `quorum` and it has flushed up to
the position recorded when the GUC changed); until then Q is raised by the unconfirmed count.

Where hactl does better than Patroni 4.1: a planned step that would break the invariant is never emitted (the
plan stops before it and the next loop starts again from what it observes), and in strict mode with no
candidate the GUC keeps the old voters or `ANY 1 (placeholder)`, never `*` (which any walsender releases).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ctl.ha.actions import Action, Kind, act
from ctl.ha.state import Observation
from ctl.ha.sync import PLACEHOLDER, candidates, parse_standby_names, quote_name, sync_value
from ctl.model import SyncState


@dataclass(frozen=True)
class Step:
    """One write: `guc` sets `ANY num (names)`, `key` CAS-writes the sync key {leader, quorum=num, names}."""

    kind: str  # guc | key
    leader: str
    num: int
    names: frozenset[str]


@dataclass(frozen=True)
class QuorumInput:
    leader: str  # the sync key's leader (the former leader right after a failover)
    quorum: int  # the key's Q
    voters: frozenset[str]  # the key's V
    numsync: int  # the GUC's N
    sync: frozenset[str]  # the GUC's S
    confirmed: int | None  # how many of S are confirmed (None: not known, after a restart or a promotion)
    active: frozenset[str]  # A: the candidates streaming now
    wanted: int  # W: synchronous_node_count
    me: str  # this node, the leader wanted
    strict: bool = False


class _Unsafe(Exception):
    """A planned state breaks the invariant (the plan stops before it)."""


class _Stop(Exception):
    """Nothing more to do this loop: wait for replicas to connect or to confirm."""


def violation(leader: str, quorum: int, voters: Iterable[str], numsync: int, sync: Iterable[str],
              me: str) -> str | None:
    """Why this pair of states may lose an acknowledged commit, or None."""
    v, s = frozenset(voters), frozenset(sync)
    vp, sp = v | {leader}, s | {me}
    if v and len(vp | sp) > quorum + numsync + 1:
        return (f"quorum {quorum} and ANY {numsync} do not overlap over {len(vp | sp)} members "
                f"({', '.join(sorted(vp | sp))})")
    if not (vp <= sp or sp <= vp):
        return f"voters {', '.join(sorted(vp - sp))} are not in the GUC and {', '.join(sorted(sp - vp))} not in the key"
    return None


@dataclass
class _Plan:
    leader: str
    q: int
    v: frozenset[str]
    n: int
    s: frozenset[str]
    confirmed: int
    active: frozenset[str]
    wanted: int
    me: str
    steps: list[Step] = field(default_factory=list)
    # every GUC value in effect earlier in this loop: commits they acknowledged are on no confirmed member yet
    earlier: list[tuple[int, frozenset[str]]] = field(default_factory=list)
    known: int | None = None  # confirmed members of s0, the GUC's names at the start of the loop (None: unknown)
    s0: frozenset[str] = frozenset()
    s0_leader: str = ""  # the key's leader at the start of the loop

    def check(self) -> None:
        why = violation(self.leader, self.q, self.v, self.n, self.s, self.me)
        if why:
            raise _Unsafe(why)

    def floor(self, v: frozenset[str]) -> int:
        """The least Q that keeps commits acknowledged before this loop's first GUC value: only confirmed members
        (live ones of that value, caught up with its change) are known to hold them, so the voters that are not
        must not elect a leader on their own. Patroni raises Q by the unconfirmed count only when adding."""
        if self.s0_leader != self.me or self.known is None or not v:
            return 0
        return len(v) - max(0, self.known - len((self.s0 & self.active) - v))

    def check_earlier(self) -> None:
        """Commits acknowledged before this write must stay covered, else wait for the next loop (where the
        standbys confirm against the value written now). Values of the GUC earlier in this loop: the same overlap.
        Values before the loop: only the confirmed members (caught up with the last change) are known to hold
        them, so at least |V| - Q voters must be confirmed ones (Patroni checks neither when it removes members)."""
        if self.s0_leader != self.me or self.known is None:
            return  # right after a promotion or a restart: Patroni's inference from the quorum
        for n, s in self.earlier:
            vp, sp = self.v | {self.leader}, s | {self.me}
            if self.v and len(vp | sp) > self.q + n + 1:
                raise _Stop()

    def key(self, q: int, v: frozenset[str], *, leader: str | None = None, adjust: bool = True) -> None:
        """Write the key. Unless the leader changes: an unconfirmed GUC member raises Q (it may lack older
        commits), and with nothing confirmed and no voters the key goes back to Q=0, V={}."""
        if q < 0 or (q > 0 and q >= len(v)):
            raise _Unsafe(f"quorum {q} out of range for voters {', '.join(sorted(v)) or 'none'}")
        before = (self.leader, self.q, self.v)
        if leader is not None:
            self.leader = leader
        elif self.confirmed == 0 and not self.v:
            q, v = 0, frozenset()
        elif adjust:
            q += max(self.n - self.confirmed, 0)
        q = max(q, self.floor(v))
        if (self.leader, q, v) == before:
            if self.v:
                return
            raise _Stop()  # nothing to add to the key until a standby confirms
        if v and q >= len(v):
            raise _Stop()  # the unconfirmed ones would leave no quorum: wait until they confirm
        self.q, self.v = q, v
        self.check()
        self.check_earlier()
        self.steps.append(Step("key", self.leader, q, v))

    def guc(self, n: int, s: frozenset[str]) -> None:
        if n < 0 or n > len(s):
            raise _Unsafe(f"ANY {n} of {len(s)} names")
        self.earlier.append((self.n, self.s))
        self.n, self.s = n, s
        self.check()
        self.steps.append(Step("guc", self.leader, n, s))

    # ------------------------------------------------------------------------------------------- the phases

    def after_failover(self) -> None:
        """A new leader: the former one becomes a voter, this node leaves the voters."""
        v = (self.v - {self.me}) | {self.leader}
        if not self.s:
            self.guc(len(v) - self.q, v)
        self.key(self.q, v, leader=self.me)
        self.earlier = []  # as a replica this node acknowledged nothing
        if not (self.s & self.active):
            raise _Stop()  # right after a promotion: give the replicas a loop to reconnect

    def repair(self) -> None:
        """Finish a sequence a previous loop left half done, so that S == V again."""
        if self.s < self.v:  # voters were being added, or removed from the GUC first
            dead = self.v - (self.s | self.active)
            if dead:
                left = self.v - dead
                self.key(len(left) - self.n, left, adjust=not (self.s - self.active))
            grow = (self.v & self.active) - self.s
            if grow:
                self.guc(self.n, self.s | grow)
        elif self.s > self.v:  # the GUC grew first (it was empty), or the GUC shrinks after the key
            dead = self.s - self.active
            kept = self.s - dead
            if dead and kept and (not self.v or kept & self.v) and \
                    violation(self.leader, self.q, self.v, min(self.n, len(kept)), kept, self.me) is None:
                self.guc(min(self.n, len(kept)), kept)  # (Patroni tries it even when unsafe, and stops there)
            join = (self.s - self.v) & self.active
            if join:
                v = self.v | join
                self.key(len(v) - self.n, v)
            extra = self.s - self.v
            if extra:
                self.guc(min(self.n, len(self.s) - len(extra)), self.s - extra)
        if self.v != self.s:
            raise _Unsafe(f"key voters {sorted(self.v)} and GUC {sorted(self.s)} still differ")
        margin = self.q + min(self.n, self.confirmed) - len(self.v | self.s)
        if margin > 0:  # a change of N was under way
            if self.n > self.wanted:
                self.guc(max(self.wanted, len(self.v) - self.q), self.s)
            else:
                self.key(len(self.s) - self.n, self.v)
        elif (self.n == self.wanted and self.q + self.n - len(self.v | self.s) > 0
              and self.n > self.confirmed):
            self.key(len(self.s) - self.n, self.v)

    def remove_gone(self) -> None:
        gone = self.s - self.active
        if not gone:
            return
        if gone == self.s:  # the GUC would be empty: the key first
            self.key(0, frozenset(), adjust=False)
            self.guc(0, frozenset())
            return
        if self.q:  # spend the quorum's slack first: the GUC, then the key
            drop = frozenset(sorted(gone, reverse=True)[:self.q])
            s = self.s - drop
            n = min(max(self.wanted, self.n), len(s))
            self.guc(n, s)
            v = self.v - drop
            gone = gone & self.s
            self.key(len(v) - self.n, v, adjust=not gone)
        if gone:
            n = self.n - len(gone)
            s, v = self.s - gone, self.v - gone
            lower = n - min(self.wanted, len(s))
            self.key(min(lower, len(v) - 1) if lower else 0, v, adjust=False)
            self.guc(n, s)

    def add_new(self) -> None:
        new = self.active - self.s
        if not new:
            return
        target = min(self.wanted, len(self.s | new))
        more = target - self.n
        if more > 0:
            add = frozenset(sorted(new)[:more]) if self.s else new  # an empty GUC takes them all at once
            self.guc(self.n + (len(add) if self.s else more), self.s | add)
            v = self.v | add
            self.key(len(v) - self.n, v)  # Patroni: - W, unsafe when fewer joined than W asked for
            new = new - self.s
        if new:
            v = self.v | new
            self.key(len(v) - target, v, adjust=target > self.confirmed)
            self.guc(target, self.s | new)

    def change_factor(self) -> None:
        delta = min(self.wanted, len(self.s)) - self.n
        if delta > 0:  # N up first, then Q down
            self.guc(self.n + delta, self.s)
            self.key(len(self.v) - self.n, self.v)
        elif delta < 0:  # Q up first (at most |V| - 1), then N down as far as that Q covers
            q = min(len(self.v) - self.n - delta, len(self.v) - 1)
            if q > self.q:
                self.key(q, self.v, adjust=self.wanted > self.confirmed)
            n = max(self.n + delta, len(self.v | self.s | {self.leader, self.me}) - self.q - 1)
            if n < self.n:
                self.guc(n, self.s)


def merged(steps: list[Step]) -> list[Step]:
    """Consecutive writes of the same kind collapse into the last: nobody could observe the ones in between."""
    return [st for i, st in enumerate(steps) if i + 1 == len(steps) or steps[i + 1].kind != st.kind]


def resolve(x: QuorumInput) -> tuple[list[Step], str]:
    """The ordered writes for this loop, and a note ('' when steady; the reason when the plan stopped early)."""
    p = _Plan(x.leader, x.quorum, x.voters, min(x.numsync, len(x.sync)), x.sync, x.confirmed or 0, x.active,
              x.wanted, x.me, known=x.confirmed, s0=x.sync, s0_leader=x.leader)
    note = ""
    try:
        if x.me != x.leader:
            p.after_failover()
        else:
            why = violation(p.leader, p.q, p.v, p.n, p.s, p.me)
            if why:
                note = f"repairing the sync key: {why}"
                p.key(len(p.s) - p.n, p.s)
        if x.confirmed is None and p.s & p.active:
            # not known (after a restart or a promotion): as Patroni, infer it from the quorum. Patroni does so
            # whenever nobody is confirmed; hactl knows when that is a fact, and then waits for confirmations.
            p.confirmed = min(len(p.s & p.active), len(p.v) - p.q)
        p.repair()
        p.remove_gone()
        p.add_new()
        p.change_factor()
    except _Stop:
        pass
    except _Unsafe as exc:
        note = f"quorum plan stopped before an unsafe step: {exc}"
    return merged(p.steps), note


# ------------------------------------------------------------------------------------------ the agent's view


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
    steps, note = resolve(QuorumInput(sync.leader, quorum, voters, numsync, names, _confirmed(obs, names), cands,
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
