"""Quorum commit (`synchronous_mode: quorum`): the resolver that moves the `sync` key and `ANY N (S)` in step. Pure.

Two pairs describe the state, both read "any n of the set":

- `synchronous_standby_names = ANY N (S)`: a commit is acknowledged once the leader and N members of S hold it;
- the `sync` key `{leader: L, quorum: Q, sync_standby: V}`: a member may promote once Q+1 of L and V (Q members
  of V when it is one of them) report a WAL position no further than its own.

No acknowledged commit is lost as long as any set that can acknowledge a commit (the leader and N of S) overlaps
any set that can elect a new leader (Q+1 of V and L), that is `|V' ∪ S'| <= Q + N + 1` with V' = V ∪ {L} and
S' = S ∪ {me}; and, because the two are written one after the other, one of V', S' contains the other. The
resolver plans the writes that reach the steady state `S = V = A` (the active candidates), `N = min(W, |A|)`,
`Q = |A| - N` in Patroni's order (`QuorumStateResolver`, docs/agent.md): it raises a number before it lowers the
other, adds a member to the key before the GUC unless the GUC is empty, and removes it from the GUC first unless
the GUC would become empty. It checks the invariant before every single write, and more than Patroni does:

- commits acknowledged under a value of the GUC written earlier in the same loop are on no confirmed member
  yet, so a key write must overlap those values too (else the next loop writes it, after the confirmations);
- older commits are known to be only on the confirmed members (PostgreSQL reports them `quorum` and they flushed
  past the position recorded at the last GUC change), so Q never drops below |V| minus the confirmed voters;
  Patroni skips that when it removes members, and assumes confirmations from the quorum whenever none is
  confirmed; hactl does so only when confirmations are unknown (after a restart or a promotion);
- a step that would break the invariant is never emitted (Patroni raises in the middle of its cycle).

tests/unit/test_ha_quorum_model.py checks the result against a model of commits and elections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


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
