"""The HA brain: `decide(observation) -> Decision`. Pure: no I/O, no clock, no randomness.

Each branch is one rule an operator can name; the table test in tests/unit/test_ha_decide.py has a row per rule.
Safety rules come first: a primary that cannot prove it leads stops before its lease can expire, and a replica
that lags past `maximum_lag_on_failover`, is tagged nofailover, or is behind a reachable peer never takes the lock.
"""

from __future__ import annotations

from ctl.ha import eligibility, failsafe, quorum_rules, standby, sync
from ctl.ha.actions import Action, Decision, Kind, act
from ctl.ha.state import Observation
from ctl.model import lsn_to_str


def _d(reason: str, *actions: Action) -> Decision:
    return Decision(tuple(actions) or (act(Kind.NOOP),), reason)


def demote_after(obs: Observation) -> float:
    """Seconds after the last successful renewal at which a primary that cannot reach the DCS must demote.

    `loop_wait + 2*retry_timeout <= ttl` (enforced at start) leaves at least `loop_wait + retry_timeout` seconds
    between this point and the lease expiry for the demotion itself.
    """
    s = obs.settings
    return float(min(s.retry_timeout, max(1, s.ttl - s.loop_wait - s.retry_timeout)))


def decide(obs: Observation) -> Decision:
    """Choose what the agent does in this loop iteration."""
    decision = _decide(obs)
    return standby.adapt(decision) if standby.active(obs) else decision


def _decide(obs: Observation) -> Decision:
    if not obs.dcs_ok:
        return _without_dcs(obs)
    cluster = obs.cluster
    assert cluster is not None
    pg = obs.pg

    if obs.task:
        return _task_in_progress(obs)
    if cluster.initialize is None:
        return _d("cluster not initialized in DCS: racing to bootstrap it", act(Kind.INITIALIZE))
    if cluster.initialize == "" and not obs.holds_lock:
        return _d("another member is bootstrapping the cluster: waiting")
    if cluster.initialize and pg.system_identifier and cluster.initialize != pg.system_identifier:
        return _d(
            f"data directory belongs to system {pg.system_identifier}, the cluster is {cluster.initialize}: "
            "refusing to start (remove the data directory to re-clone)"
        )

    leader = cluster.leader.name if cluster.leader else None
    if pg.data_dir_empty:
        if leader and leader != obs.name:
            lm = cluster.member(leader)
            if lm is not None and lm.conn_url:
                source = _clone_source(obs, leader)
                what = f"member {source} (clonefrom)" if source != leader else f"leader {leader}"
                return _d(f"cloning from {what}", act(Kind.CLONE, source),
                          act(Kind.START_REPLICA, _upstream(obs, leader)))
        return _d("no leader to clone from: waiting")

    if cluster.is_paused:
        return _paused(obs, leader)

    if not pg.running:
        return _not_running(obs, leader)

    if obs.holds_lock:
        if standby.active(obs):
            return _leader_switchover(obs) if obs.failover and not obs.is_primary else standby.leader(obs)
        if obs.is_primary:
            if obs.failover is not None:
                return _leader_switchover(obs)
            steps, note = sync.primary_actions(obs)
            return _d("renewed leader lock" + (f"; {note}" if note else ""), act(Kind.RENEW_LOCK),
                      act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS), *steps)
        return _d("holding the leader lock as a replica: promoting", act(Kind.RENEW_LOCK), *_promote(obs),
                  act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))

    if leader is None:
        if obs.is_primary:
            return _d("no leader and this node runs as primary: acquiring leader lock", act(Kind.ACQUIRE_LOCK),
                      act(Kind.UPDATE_STATUS))
        return _election(obs)

    # someone else leads
    if obs.is_primary:
        return _d(f"demoting: {leader} holds the leader lock", act(Kind.DEMOTE))
    upstream = _upstream(obs, leader)
    if pg.upstream != upstream:
        via = f" via {upstream} (replicatefrom)" if upstream != leader else ""
        return _d(f"following {leader}{via}", act(Kind.FOLLOW, upstream))
    if pg.stream_stalled:
        lm = cluster.member(leader)
        # on another timeline than the leader: older (a failover), or newer (this cluster was promoted, then made
        # a standby cluster again with demote-cluster): either way its WAL diverged
        other_tl = lm is not None and lm.timeline is not None and pg.timeline is not None and pg.timeline != lm.timeline
        leader_up = lm is not None and lm.state == "running"
        if obs.settings.use_pg_rewind and other_tl and leader_up:
            assert lm is not None and pg.timeline is not None and lm.timeline is not None
            which = "an older" if pg.timeline < lm.timeline else "a newer (diverged)"
            return _d(f"not streaming from {leader} and on {which} timeline: rewinding", act(Kind.REWIND, leader))
        return _d(f"not streaming from {upstream}")
    return _d(f"following {leader}" + (f" via {upstream} (replicatefrom)" if upstream != leader else ""))


def _promote(obs: Observation) -> tuple[Action, ...]:
    """PROMOTE, preceded in synchronous mode by the sync key and synchronous_standby_names (Patroni's prepromote)."""
    return (*sync.prepromote_actions(obs), act(Kind.PROMOTE))


def _task_in_progress(obs: Observation) -> Decision:
    """A long task runs (on the task runner): keep the lock if held, never race, demote a primary without it."""
    cluster, task = obs.cluster, obs.task
    assert cluster is not None
    if obs.holds_lock:
        return _d(f"updated leader lock during {task}", act(Kind.RENEW_LOCK))
    bootstrapping = not cluster.initialize  # our own bootstrap runs a primary before it takes the lock
    if obs.is_primary and not bootstrapping and not cluster.is_paused:
        return _d(f"lost leader lock during {task}: demoting", act(Kind.DEMOTE))
    if cluster.leader is None:
        return _d(f"{task} in progress: not healthy enough for the leader race")
    return _d(f"{task} in progress")


def failover_possible(obs: Observation) -> bool:
    """Some other member could take over: it runs, has a conn_url and is not tagged nofailover. In quorum mode
    (Patroni's `is_failover_possible`): quorum+1 such members of the sync key, or none could gather the votes."""
    assert obs.cluster is not None
    able = [m.name for m in obs.cluster.members
            if m.name != obs.name and m.state == "running" and m.conn_url and not m.nofailover]
    if sync.quorum_race(obs):
        key = obs.cluster.sync
        assert key is not None
        return sum(1 for n in able if n in key.sync_standby) >= (key.quorum or 0) + 1
    return bool(able)


def _running_member(obs: Observation, name: str | None) -> bool:
    m = obs.cluster.member(name) if (obs.cluster and name and name != obs.name) else None
    return m is not None and m.state == "running" and bool(m.conn_url)


def _upstream(obs: Observation, leader: str) -> str:
    """The member to stream from: the `replicatefrom` tag's member while it runs, else the leader."""
    wanted = obs.settings.replicatefrom
    return wanted if wanted and wanted != leader and _running_member(obs, wanted) else leader


def _clone_source(obs: Observation, leader: str) -> str:
    """A running member tagged `clonefrom` (first by name) spares the leader the base backup; else the leader."""
    assert obs.cluster is not None
    for m in obs.cluster.members:
        if m.name != leader and _truthy_tag(m.tags.get("clonefrom")) and _running_member(obs, m.name):
            return m.name
    return leader


def _truthy_tag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1")
    return bool(value)


def _without_dcs(obs: Observation) -> Decision:
    if not obs.is_primary:
        return _d("DCS unreachable: staying a replica")
    keep = failsafe.keeps_leading(obs)
    if keep is not None:
        return keep
    if obs.last_lock_renewal is None:
        return _d("demoting: DCS unreachable and this primary holds no leader lock", act(Kind.DEMOTE))
    elapsed = obs.now - obs.last_lock_renewal
    limit = demote_after(obs)
    if elapsed >= limit:
        return _d(f"demoting: cannot renew leader lock for {elapsed:.1f}s (limit {limit:.0f}s, ttl {obs.settings.ttl}s)",
                  act(Kind.DEMOTE))
    return _d(f"DCS unreachable: leader lock renewed {elapsed:.1f}s ago, demoting at {limit:.0f}s")


def _paused(obs: Observation, leader: str | None) -> Decision:
    fo = obs.failover
    if obs.holds_lock and obs.is_primary:
        if fo is not None and fo.member:  # in maintenance mode only a switchover to a named member is allowed
            return _leader_switchover(obs)
        steps, note = sync.primary_actions(obs)  # as Patroni: the leader keeps managing sync in pause
        return _d("paused: renewed leader lock" + (f"; {note}" if note else ""), act(Kind.RENEW_LOCK),
                  act(Kind.UPDATE_STATUS), *steps)
    if obs.holds_lock and obs.pg.running and standby.active(obs):  # Patroni #2179: keeps its lock in pause
        return _d("paused: renewed standby leader lock", act(Kind.RENEW_LOCK), act(Kind.UPDATE_STATUS))
    if obs.holds_lock and not obs.pg.running:  # Patroni: no restart in pause, and the lock goes
        return _d("paused: postgres is not running: removing the leader lock (no restart in maintenance mode)",
                  act(Kind.RELEASE_LOCK))
    if leader is None and fo is not None and fo.member == obs.name and obs.pg.running and obs.pg.in_recovery:
        return _take_over_as_candidate(obs)
    if leader is None and obs.is_primary:
        return _d("paused: acquiring leader lock for the running primary", act(Kind.ACQUIRE_LOCK))
    return _d("paused: no automatic action")


def _not_running(obs: Observation, leader: str | None) -> Decision:
    pg = obs.pg
    if obs.holds_lock and standby.active(obs):
        return standby.not_running_leader(obs)
    if obs.holds_lock:
        if pg.start_failed:
            return _d("removing the leader lock after trying and failing to start postgres",
                      act(Kind.HAND_OVER))
        if not pg.was_primary:
            return _d("postgres is not running and cannot start as primary: releasing leader lock",
                      act(Kind.RELEASE_LOCK))
        timeout = obs.settings.primary_start_timeout
        what = "postgres crashed" if pg.crashed else "postgres is not running"
        if timeout == 0 and failover_possible(obs):
            return _d(f"{what} and primary_start_timeout is 0: releasing the leader lock for a failover",
                      act(Kind.HAND_OVER))
        return _d(f"{what} while holding the leader lock: starting it in place as primary "
                  f"(primary_start_timeout {timeout}s)", act(Kind.RENEW_LOCK),
                  *sync.start_primary_actions(obs), act(Kind.START_PRIMARY))
    if leader is None and obs.failover is not None and obs.failover.member and obs.failover.member != obs.name:
        return _d(f"waiting for {obs.failover.member} to take over (requested switchover)")
    grace = max(obs.settings.ttl, 2 * obs.settings.loop_wait)
    if leader is None and pg.handed_over_at is not None and obs.now - pg.handed_over_at < grace:
        # started read-only, this node's WAL (ahead of the replicas') would win the election it just gave up
        return _d(f"released the leader lock for a failover: waiting up to {grace}s for a replica to take over")
    if leader is not None and leader != obs.name:
        if pg.was_primary:
            if obs.settings.use_pg_rewind:
                return _d(f"former primary rejoining {leader}: rewinding", act(Kind.REWIND, leader))
            return _d(f"former primary rejoining {leader} without pg_rewind", act(Kind.START_REPLICA, leader))
        return _d(f"starting as a replica of {leader}", act(Kind.START_REPLICA, leader))
    return _d("no leader: starting read-only until an election", act(Kind.START_REPLICA))


def _election(obs: Observation) -> Decision:
    """The leader key is gone and this node is a running replica: take the lock only if it is the healthiest."""
    s, pg, cluster = obs.settings, obs.pg, obs.cluster
    assert cluster is not None
    fo = obs.failover
    if fo is not None and fo.member == obs.name:
        return _take_over_as_candidate(obs)
    if fo is not None and fo.member:
        p = obs.peers.get(fo.member)
        if p is not None and p.reachable and not p.nofailover:
            return _d(f"no leader; {fo.member} was asked to take over: waiting for it")
    if s.nofailover:
        return _d("no leader; not eligible: tagged nofailover")
    blocked = failsafe.election_block(obs)
    if blocked:
        return _d(blocked)
    problem = sync.promote_problem(obs)
    if problem:
        return _d(f"no leader; not eligible: {problem}")
    if pg.wal_lsn is None:
        return _d("no leader; not eligible: own WAL position unknown")
    optime = cluster.optime
    if optime is not None and optime - pg.wal_lsn > s.maximum_lag_on_failover:
        return _d(
            f"no leader; not eligible: lag {optime - pg.wal_lsn} bytes exceeds maximum_lag_on_failover "
            f"{s.maximum_lag_on_failover} (last leader optime {lsn_to_str(optime)}, mine {lsn_to_str(pg.wal_lsn)})"
        )
    if sync.quorum_race(obs):
        problem = quorum_rules.race_problem(obs)
        if problem:
            return _d(f"no leader; not promoting: {problem}")
        return _d(f"no leader: acquiring leader lock with the quorum's votes (at {lsn_to_str(pg.wal_lsn)})",
                  act(Kind.ACQUIRE_LOCK), *_promote(obs), act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))
    for peer in sorted(obs.peers.values(), key=lambda p: p.name):
        if peer.name == obs.name or not peer.reachable or peer.nofailover:
            continue
        if peer.is_primary:
            return _d(f"no leader; not promoting: {peer.name} still runs as primary")
        if not sync.race_peer(obs, peer.name):
            continue
        if peer.wal_lsn is not None and peer.wal_lsn > pg.wal_lsn:
            return _d(f"no leader; not promoting: {peer.name} is ahead ({lsn_to_str(peer.wal_lsn)} > "
                      f"{lsn_to_str(pg.wal_lsn)})")
        if peer.wal_lsn == pg.wal_lsn and peer.failover_priority > s.failover_priority:
            return _d(f"no leader; deferring to {peer.name} (same position, higher failover_priority)")
    return _d(f"no leader: acquiring leader lock as the healthiest replica (at {lsn_to_str(pg.wal_lsn)})",
              act(Kind.ACQUIRE_LOCK), *_promote(obs), act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))


# ------------------------------------------------------------------------------------------------ switchover


def _parse_time(text: str) -> float | None:
    from datetime import datetime

    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return ts.timestamp()


def candidate_problem(obs: Observation, name: str) -> str | None:
    """Why `name` cannot take over from this (healthy) leader now, or None when it can (ctl/ha/eligibility.py)."""
    assert obs.cluster is not None
    problems = eligibility.problems(_situation(obs), _candidate(obs, name))
    return f"{name} {'; '.join(problems)}" if problems else None


def _situation(obs: Observation) -> eligibility.Situation:
    c = obs.cluster
    assert c is not None
    action = "switchover" if obs.failover is None or obs.failover.leader else "failover"
    sync_standbys = frozenset(c.sync.sync_standby) if c.sync and c.sync.leader == obs.name else frozenset()
    quorum_q = (c.sync.quorum or 0) if c.sync and c.sync.leader == obs.name else 0
    return eligibility.Situation(action, obs.name, obs.pg.wal_lsn or 0, obs.settings.maximum_lag_on_failover,
                                 obs.pg.timeline, obs.settings.synchronous_mode, sync_standbys,
                                 candidate=obs.failover.member if obs.failover else None, quorum=quorum_q)


def _candidate(obs: Observation, name: str) -> eligibility.Candidate:
    member, peer = obs.cluster.member(name) if obs.cluster else None, obs.peers.get(name)
    if peer is None or not peer.reachable:
        return eligibility.Candidate(name, member, reachable=False)
    return eligibility.Candidate(name, member, True, wal_lsn=peer.wal_lsn, timeline=peer.timeline,
                                 nofailover=peer.nofailover, failover_priority=peer.failover_priority,
                                 streaming=peer.streaming)


def _refuse(why: str, *keep: Action) -> Decision:
    return _d(f"switchover refused: {why}", *keep, act(Kind.CLEAR_FAILOVER, refusal=why))


def _leader_switchover(obs: Observation) -> Decision:
    """This node leads and the failover key asks for a switchover: step down to a healthy candidate, or refuse."""
    fo = obs.failover
    assert fo is not None and obs.cluster is not None
    keep = (act(Kind.RENEW_LOCK), act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))
    if fo.leader and fo.leader != obs.name:
        return _refuse(f"it names {fo.leader} as the leader, not {obs.name}", *keep)
    if fo.member == obs.name:
        return _refuse(f"{obs.name} is already the leader", *keep)
    if fo.scheduled_at:
        at = _parse_time(fo.scheduled_at)
        if at is None:
            return _refuse(f"cannot parse scheduled_at {fo.scheduled_at!r}", *keep)
        if obs.wall_time < at:
            return _d(f"renewed leader lock; switchover scheduled at {fo.scheduled_at}", *keep)
    if fo.member:
        problem = candidate_problem(obs, fo.member)
        if problem:
            return _refuse(f"{problem}", *keep)
        return _d(f"switchover to {fo.member}: stepping down", act(Kind.STEP_DOWN, fo.member))
    problems, good = [], []
    for m in obs.cluster.members:
        if m.name == obs.name:
            continue
        problem = candidate_problem(obs, m.name)
        if problem:
            problems.append(problem)
        else:
            good.append(eligibility.rank_key(_candidate(obs, m.name)))
    if not good:
        why = "; ".join(problems) if problems else "the cluster has no other members"
        return _refuse(f"no good candidates ({why})", *keep)
    short = eligibility.quorum_shortfall(_situation(obs), len(good))
    if short:
        return _refuse(short, *keep)
    best = sorted(good)[0][2]
    return _d(f"switchover: stepping down for the healthiest candidate {best}", act(Kind.STEP_DOWN, best))


def _take_over_as_candidate(obs: Observation) -> Decision:
    """The failover key names this node and the leader is gone: take the lock (manual failover/switchover)."""
    fo, pg, s = obs.failover, obs.pg, obs.settings
    assert fo is not None and obs.cluster is not None
    if fo.leader:  # a switchover from a healthy leader: the usual lag limit applies
        optime = obs.cluster.optime
        why = None
        if pg.wal_lsn is None:
            why = "requested to take over, but own WAL position is unknown"
        elif optime is not None and optime - pg.wal_lsn > s.maximum_lag_on_failover:
            why = (f"requested to take over, but lag {optime - pg.wal_lsn} bytes exceeds "
                   f"maximum_lag_on_failover {s.maximum_lag_on_failover}")
        if why:
            return _d(why, act(Kind.CLEAR_FAILOVER, refusal=why))
    return _d("taking over as the requested candidate", act(Kind.ACQUIRE_LOCK), *_promote(obs),
              act(Kind.CLEAR_FAILOVER), act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))
