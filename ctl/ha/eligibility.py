"""Who may take over the leader role, and why not: the one set of candidate rules.

The agent's HA loop (ctl/ha/decide.py), `hactl switchover|failover` and `hactl plan` all call `problems()` and
`choose()` here, so a plan and a refusal name the same rules with the same numbers. Pure: imports model + stdlib.

A rule is one function `(Situation, Candidate) -> str | None` in RULES: None when the rule passes, otherwise a reason
that starts with a verb and names the rule and its numbers (`lags 16.2 MB behind (maximum_lag_on_failover 1.0 MB)`);
a caller prints it after the member's name. A new rule is a new function and one entry in RULES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ctl.model import Member, tags_failover_priority, tags_nofailover


@dataclass(frozen=True)
class Candidate:
    """One member as the caller sees it now: its member key plus its live answer to `GET /patroni`."""

    name: str
    member: Member | None  # the member key; None: no key in etcd
    reachable: bool  # GET /patroni answered
    running: bool = True  # PostgreSQL `state` is running
    wal_lsn: int | None = None  # the furthest of received/replayed/location
    timeline: int | None = None
    nofailover: bool = False  # from the live tags (a member key may lag behind a tag change)
    failover_priority: int = 1
    streaming: bool | None = None  # replication_state is streaming (None: not known)


@dataclass(frozen=True)
class Situation:
    """The cluster-wide facts the rules compare a candidate against."""

    action: str  # switchover | failover | election
    leader: str | None  # the member holding the leader lock (None: leaderless)
    leader_lsn: int | None  # the healthy leader's WAL position; None skips the lag rule (no healthy leader)
    maximum_lag_on_failover: int = 1048576
    leader_timeline: int | None = None
    synchronous_mode: str = "off"  # off | on | quorum
    sync_standbys: frozenset[str] = frozenset()
    paused: bool = False
    candidate: str | None = None  # the member asked for by name, if any
    scheduled_at: str | None = None  # a switchover already scheduled in the failover key (not this request)
    quorum: int = 0  # the sync key's quorum (quorum mode: Q+1 healthy quorum standbys to go without a candidate)
    extra: Mapping[str, Any] = field(default_factory=dict)  # room for rules that need more (e.g. quorum numbers)


Rule = Callable[[Situation, Candidate], "str | None"]


def fmt_bytes(n: int) -> str:
    """Bytes the way an operator reads WAL distances: `16.2 MB`, `8.0 kB`, `120 bytes`."""
    if n >= 1048576:
        return f"{n / 1048576:.1f} MB"
    if n >= 10240:
        return f"{n / 1024:.1f} kB"
    return f"{n} bytes"


# --------------------------------------------------------------------------------------------------- the rules


def rule_member(s: Situation, c: Candidate) -> str | None:
    return "has no member key in etcd" if c.member is None else None


def rule_leader(s: Situation, c: Candidate) -> str | None:
    return "is the current leader" if s.leader is not None and c.name == s.leader else None


def rule_nofailover(s: Situation, c: Candidate) -> str | None:
    tags = c.member.tags if c.member is not None else {}
    if (c.member is not None and tags_nofailover(tags)) or c.nofailover:
        if tags.get("nofailover") is None and "failover_priority" in tags:
            return f"has failover_priority {tags_failover_priority(tags)} (0 or less: never promoted)"
        return "is tagged nofailover"
    return None


def rule_reachable(s: Situation, c: Candidate) -> str | None:
    return "does not answer on its REST API" if not c.reachable else None


def rule_running(s: Situation, c: Candidate) -> str | None:
    return "does not run PostgreSQL" if c.reachable and not c.running else None


def rule_timeline(s: Situation, c: Candidate) -> str | None:
    """An older timeline matters only without streaming: a streaming replica reports the timeline of its last
    restartpoint for a while after a promotion, while a stopped stream on an old timeline may be a diverged history
    whose WAL position compares as "ahead"."""
    if c.streaming is False and c.timeline is not None and s.leader_timeline is not None \
            and c.timeline < s.leader_timeline:
        return f"is on timeline {c.timeline}, the leader on timeline {s.leader_timeline}, and does not stream"
    return None


def rule_wal_position(s: Situation, c: Candidate) -> str | None:
    return "reports no WAL position" if c.reachable and c.running and c.wal_lsn is None else None


def rule_lag(s: Situation, c: Candidate) -> str | None:
    if s.leader_lsn is None or c.wal_lsn is None:
        return None
    lag = s.leader_lsn - c.wal_lsn
    if lag > s.maximum_lag_on_failover:
        return f"lags {fmt_bytes(lag)} behind (maximum_lag_on_failover {fmt_bytes(s.maximum_lag_on_failover)})"
    return None


def rule_sync(s: Situation, c: Candidate) -> str | None:
    """In synchronous_mode on and quorum, only a listed sync (quorum) standby may take over by switchover
    (Patroni's `is_eligible`: "in synchronous mode we allow failover (not switchover!) to async node"; the CLI
    asks for a confirmation then). The election's quorum votes are ctl/ha/quorum_rules.py `race_problem`."""
    if s.synchronous_mode not in ("on", "quorum") or s.action == "failover" or c.name in s.sync_standbys:
        return None
    listed = ", ".join(sorted(s.sync_standbys)) or "none"
    if s.synchronous_mode == "quorum":
        return f"is not a quorum standby (synchronous_mode quorum; quorum standbys: {listed})"
    return f"is not a synchronous standby (synchronous_mode {s.synchronous_mode}; sync standbys: {listed})"


def quorum_shortfall(s: Situation, good: int) -> str | None:
    """Patroni's `is_failover_possible` in quorum mode: with no candidate named, the leader steps down only while
    quorum+1 quorum standbys are healthy (any set that can elect a leader then holds every acknowledged commit).
    A named candidate ignores it (#3307, #3310)."""
    if s.synchronous_mode != "quorum" or s.candidate or s.action == "election" or good >= s.quorum + 1:
        return None
    return (f"quorum requirement {s.quorum} cannot be reached: {good} healthy quorum standby"
            f"{'s' if good != 1 else ''}, {s.quorum + 1} needed")


def rule_paused(s: Situation, c: Candidate) -> str | None:
    if s.paused and s.action != "election" and not s.candidate:
        return "cannot be chosen automatically: the cluster is paused (name one with --candidate)"
    if s.paused and s.action == "election":
        return "cannot take over automatically: the cluster is paused"
    return None


def rule_scheduled(s: Situation, c: Candidate) -> str | None:
    if s.scheduled_at:
        return f"waits for the switchover already scheduled at {s.scheduled_at} (cancel it with flush)"
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("member", rule_member),
    ("leader", rule_leader),
    ("nofailover", rule_nofailover),
    ("rest", rule_reachable),
    ("running", rule_running),
    ("timeline", rule_timeline),
    ("wal_position", rule_wal_position),
    ("lag", rule_lag),
    ("sync", rule_sync),
    ("pause", rule_paused),
    ("scheduled", rule_scheduled),
)


def problems(s: Situation, c: Candidate, rules: tuple[tuple[str, Rule], ...] = RULES) -> list[str]:
    """Every reason why `c` may not take over now; empty when it may. The leader gets just one: it leads."""
    if rule_leader(s, c):
        return [rule_leader(s, c) or ""]
    found = []
    for _, rule in rules:
        reason = rule(s, c)
        if reason:
            found.append(reason)
    return found


def first_problem(s: Situation, c: Candidate) -> str | None:
    for _, rule in RULES:
        reason = rule(s, c)
        if reason:
            return reason
    return None


@dataclass(frozen=True)
class Verdict:
    name: str
    eligible: bool
    reasons: tuple[str, ...]
    candidate: Candidate


@dataclass(frozen=True)
class Choice:
    chosen: str | None
    why: str  # why that member, or why nobody
    verdicts: tuple[Verdict, ...]

    def refusals(self) -> dict[str, str]:
        """{member: its reasons joined with '; '} for every ineligible member but the leader."""
        return {v.name: "; ".join(v.reasons) for v in self.verdicts
                if not v.eligible and v.reasons != ("is the current leader",)}


def rank_key(c: Candidate) -> tuple[int, int, str]:
    """The healthiest first: furthest WAL position, then the highest failover_priority, then the name."""
    return (-(c.wal_lsn or 0), -c.failover_priority, c.name)


def choose(s: Situation, candidates: list[Candidate]) -> Choice:
    """Judge every candidate and pick one: the named candidate when eligible, else the healthiest eligible one."""
    verdicts = tuple(Verdict(c.name, not (r := problems(s, c)), tuple(r), c) for c in sorted(candidates,
                                                                                            key=lambda c: c.name))
    good = [v.candidate for v in verdicts if v.eligible]
    if s.candidate:
        named = next((v for v in verdicts if v.name == s.candidate), None)
        if named is None:
            return Choice(None, f"{s.candidate} is not a member of the cluster", verdicts)
        if not named.eligible:
            return Choice(None, f"{s.candidate} " + "; ".join(named.reasons), verdicts)
        return Choice(s.candidate, f"{s.candidate} was named and passes every rule", verdicts)
    if not good:
        bad = [f"{v.name} " + "; ".join(v.reasons) for v in verdicts if v.reasons != ("is the current leader",)]
        return Choice(None, "no good candidates: " + ("; ".join(bad) if bad else "no other members"), verdicts)
    short = quorum_shortfall(s, sum(1 for c in good if c.name in s.sync_standbys))
    if short:
        return Choice(None, short, verdicts)
    best = sorted(good, key=rank_key)[0]
    why = _why(s, best, good)
    return Choice(best.name, why, verdicts)


def _why(s: Situation, best: Candidate, good: list[Candidate]) -> str:
    n = len(good)
    parts = [f"the healthiest of {n} eligible member{'s' if n != 1 else ''}"]
    if s.leader_lsn is not None and best.wal_lsn is not None:
        parts.append(f"lag {fmt_bytes(max(s.leader_lsn - best.wal_lsn, 0))}")
    parts.append(f"failover_priority {best.failover_priority}")
    return ", ".join(parts) + " (least lag first, then the highest failover_priority, then the name)"


# ----------------------------------------------------------------------------------------- building candidates


def candidate_from_status(name: str, member: Member | None, status: Mapping[str, Any] | None) -> Candidate:
    """A Candidate from a member key and its `GET /patroni` JSON (None: it did not answer)."""
    if status is None:
        return Candidate(name, member, reachable=False,
                         timeline=member.timeline if member is not None else None)
    tags = status.get("tags") if isinstance(status.get("tags"), Mapping) else {}
    xlog = status.get("xlog") if isinstance(status.get("xlog"), Mapping) else {}
    values = [xlog.get(k) for k in ("location", "received_location", "replayed_location")]
    ints = [int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    timeline = status.get("timeline")
    return Candidate(
        name, member, reachable=True, running=status.get("state") == "running",
        wal_lsn=max(ints) if ints else None,
        timeline=timeline if isinstance(timeline, int) and not isinstance(timeline, bool) else None,
        nofailover=tags_nofailover(tags), failover_priority=tags_failover_priority(tags),
        streaming=status.get("replication_state") == "streaming")
