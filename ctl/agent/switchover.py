"""The agent's switchover and failover endpoints: `POST /switchover`, `POST /failover`, `DELETE /switchover`.

Patroni's request bodies, validation order, status codes and messages are the contract
(/work/shared/reference/patronictl.md §6.3). hactl improvements, all additive to Patroni's wording:
- a refused switchover says why each candidate was rejected (nofailover, unreachable, lag vs maximum_lag_on_failover);
- the lag is measured against the leader's position read when the request arrived: our own PostgreSQL when we lead
  (`status()` reads it live, see ctl.agent.live), else the leader's `GET /patroni`; /status optime only when neither
  answers. Candidates' positions come from their `GET /patroni`, asked after that (also read live on their side), so
  the two never come from caches of different ages (issue 10: a WAL segment switch looked like 16 MB of lag);
- WAL in flight is not lag: a candidate behind that reference is asked again every LAG_RECHECK s for up to
  LAG_GRACE s. The reference does not move, so a candidate that really lags stays refused;
- `Switchover failed` carries the HA loop's reason (`agent.last_switchover_result`) when it has one;
- an immediate switchover is confirmed only once the new leader's member key says primary/running, polling every
  0.2 s for max(30, 2*loop_wait) s.

A switchover is a compare-and-set write of the `failover` key that the leader's loop acts on; nothing here runs on
the HA loop's thread.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ctl.agent.api import ApiServer, Request, Response
from ctl.dcs import codec, keys
from ctl.errors import CtlError
from ctl.ha import eligibility
from ctl.ha.state import PeerView
from ctl.model import Cluster, Member, NodeStatus

log = logging.getLogger("hactl.agent")

POLL_INTERVAL = 0.2  # seconds between DCS reads while waiting for a switchover's outcome (Patroni: 1 s)
MIN_POLL_TIMEOUT = 30.0  # wait at least this long, or 2*loop_wait when longer (Patroni: 2*max(10, loop_wait))
PEER_TIMEOUT = 1.0  # GET /patroni of each candidate (and of the leader)
LAG_GRACE = 1.0  # seconds a candidate behind the reference position may take to receive the WAL in flight
LAG_RECHECK = 0.1
_LEADER_ROLES = ("primary", "master", "standby_leader")

PeerFetcher = Callable[..., Mapping[str, PeerView]]


def parse_schedule(value: Any, action: str, now: datetime | None = None) -> tuple[int | None, str | None,
                                                                                   datetime | None]:
    """(status, error, when) for a `scheduled_at`/`schedule` value, with Patroni's messages and codes."""
    try:
        when = datetime.fromisoformat(str(value).strip())
    except (TypeError, ValueError):
        return 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601", None
    if when.tzinfo is None:
        return 400, f"Timezone information is mandatory for the scheduled {action}", None
    if when < (now or datetime.now(timezone.utc)):
        return 422, f"Cannot schedule {action} in the past", None
    return None, None, when


def leader_is_healthy(cluster: Cluster) -> bool:
    """The leader key is held and its member reports a running primary: lag to it is meaningful."""
    m = cluster.leader_member
    return bool(m and m.role in _LEADER_ROLES and m.state == "running")


def rejection(member: Member, peer: PeerView | None, optime: int | None, max_lag: int) -> str | None:
    """Why `member` may not be promoted, or None: the shared candidate rules (ctl/ha/eligibility.py), every reason.

    `optime`: the healthy leader's WAL position (None: no lag rule)."""
    reachable = peer is not None and peer.reachable
    wal = peer.wal_lsn if peer is not None and peer.wal_lsn is not None else member.lsn
    candidate = eligibility.Candidate(
        member.name, member, reachable, wal_lsn=wal, timeline=peer.timeline if peer is not None else None,
        nofailover=bool(peer and peer.nofailover), failover_priority=peer.failover_priority if peer else 1)
    problems = eligibility.problems(eligibility.Situation("failover", None, optime, max_lag), candidate)
    return "; ".join(problems) or None


class Switchover:
    """The handlers; `agent` is ctl.agent.loop.Agent or a test double, `status()` our NodeStatus (read live)."""

    def __init__(self, agent: Any, fetch: PeerFetcher, status: Callable[[], NodeStatus], poll_interval: float,
                 poll_timeout: float | None, lag_grace: float = LAG_GRACE) -> None:
        self.agent = agent
        self.fetch = fetch
        self.status = status
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.lag_grace = lag_grace

    def post_switchover(self, request: Request) -> Response:
        return self._switchover(request.data, "switchover")

    def post_failover(self, request: Request) -> Response:
        return self._switchover(request.data, "failover")

    def _switchover(self, data: Mapping[str, Any], action: str) -> Response:
        agent = self.agent
        leader = data.get("leader") or None
        candidate = data.get("candidate") or data.get("member") or None
        scheduled_at = data.get("scheduled_at") or None
        cluster = agent.read_cluster()
        paused = bool(cluster and cluster.is_paused)
        log.info("received %s request with leader=%s candidate=%s scheduled_at=%s", action, leader, candidate,
                 scheduled_at)
        if action == "failover" and not candidate:
            return Response(400, "Failover could be performed only to a specific candidate")
        if action == "switchover" and not leader:
            return Response(400, "Switchover could be performed only from a specific leader")
        when: datetime | None = None
        if scheduled_at:
            if action == "failover":
                return Response(400, "Failover can't be scheduled")
            if paused:
                return Response(400, "Can't schedule switchover in the paused state")
            status, error, when = parse_schedule(scheduled_at, action)
            if error:
                return Response(status or 400, error)
        if paused and not candidate:
            return Response(400, "Switchover is possible only to a specific candidate in a paused state")
        if action == "failover" and leader:
            log.warning("received failover request with leader specified - performing switchover instead")
            action = "switchover"
        if leader == candidate:
            return Response(400, "Switchover target and source are the same")
        if cluster is None:
            return Response(503, "DCS is not accessible")
        if when is None:
            problem = self._impossible(cluster, leader, candidate, action)
            if problem:
                return Response(412, problem)
        value = codec.encode_failover(leader, candidate, when.isoformat() if when else None)
        agent.last_switchover_result = None  # a reason the loop gives from now on is about this request
        try:
            if cluster.failover is not None:
                written = agent.dcs.put(keys.FAILOVER, value, mod_revision=cluster.failover.mod_revision)
            else:
                written = agent.dcs.put(keys.FAILOVER, value, create=True)
        except CtlError as exc:
            log.warning("cannot write the failover key: %s", exc)
            written = False
        if not written:
            return Response(503, "failed to write failover key into DCS")
        agent.wake.set()
        if when is not None:
            return Response(202, f"{action.title()} scheduled")
        return self._poll(cluster.leader.name if cluster.leader else None, candidate, action)

    def _impossible(self, cluster: Cluster, leader: str | None, candidate: str | None, action: str) -> str | None:
        """Patroni's `is_failover_possible`, plus hactl's lag check and per-member reasons. None: go ahead."""
        if leader and (cluster.leader is None or cluster.leader.name != leader):
            return "leader name does not match"
        # quorum too (Patroni checks mode on only): the leader's loop would refuse a non-quorum standby anyway
        # (ctl/ha/eligibility.py rule_sync), and an answer now beats a written failover key that times out
        sync_only = action == "switchover" and cluster.synchronous_mode in ("on", "quorum")
        sync_names = frozenset(cluster.sync.sync_standby) if cluster.sync else frozenset()
        if candidate:
            if sync_only and candidate not in sync_names:
                return "candidate name does not match with sync_standby"
            members = [m for m in cluster.members if m.name == candidate]
            if not members:
                return "candidate does not exists"
        elif cluster.synchronous_mode == "on":
            members = [m for m in cluster.members if m.name in sync_names]
            if not members:
                return f"{action} is not possible: can not find sync_standby"
        else:
            members = [m for m in cluster.members
                       if cluster.leader is None or (m.name != cluster.leader.name and m.api_url)]
            if not members:
                return f"{action} is not possible: cluster does not have members except leader"
        optime = self._reference(cluster) if leader_is_healthy(cluster) else None  # read before the candidates
        max_lag = int(self.agent.settings.maximum_lag_on_failover)
        peers = dict(self.fetch(members, timeout=PEER_TIMEOUT))
        deadline = time.monotonic() + self.lag_grace
        while True:
            reasons, lagging = [], []
            for m in members:
                reason = rejection(m, peers.get(m.name), optime, max_lag)
                if reason is None:
                    return None
                reasons.append(f"{m.name}: {reason}")
                if reason.startswith("lags "):
                    lagging.append(m)
            if not lagging or time.monotonic() >= deadline:
                break
            log.debug("%s check: %s behind the leader's %s, asking again", action,
                      ", ".join(m.name for m in lagging), optime)
            time.sleep(LAG_RECHECK)  # WAL in flight: ask again, against the same reference
            peers.update(self.fetch(lagging, timeout=PEER_TIMEOUT))
        if candidate:
            return f"candidate {candidate} is not healthy: {reasons[0].partition(': ')[2]}"
        return f"{action} is not possible: no good candidates have been found: {'; '.join(reasons)}"

    def _reference(self, cluster: Cluster) -> int | None:
        """The leader's WAL position now: ours when we lead (read live by `status()`), else the leader's
        `GET /patroni`; never older than the /status optime."""
        values = [cluster.optime]
        leader = cluster.leader_member
        if leader is not None and leader.name == self.agent.name:
            values.append(getattr(self.status(), "xlog_location", None))
        elif leader is not None:
            view = self.fetch([leader], timeout=PEER_TIMEOUT).get(leader.name)
            if view is not None and view.reachable and view.is_primary:
                values.append(view.wal_lsn)
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def _poll(self, old_leader: str | None, candidate: str | None, action: str) -> Response:
        """Wait for the outcome of an immediate switchover/failover, as Patroni's `poll_failover_result`."""
        agent = self.agent
        timeout = self.poll_timeout
        if timeout is None:
            timeout = max(MIN_POLL_TIMEOUT, 2.0 * float(agent.settings.loop_wait))
        verb = "switched" if action == "switchover" else "failed"
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(self.poll_interval)
            try:
                cluster = agent.read_cluster()
            except CtlError as exc:
                log.debug("polling the %s result: %s", action, exc)
                cluster = None
            if cluster is not None:
                new = cluster.leader.name if cluster.leader else None
                if new and new != old_leader:
                    m = cluster.member(new)
                    # the lock alone is not the result: wait until the new leader runs as a primary
                    if m is not None and m.role in _LEADER_ROLES and m.state == "running":
                        if not candidate or candidate == new:
                            return Response(200, f'Successfully {verb} over to "{new}"')
                        return Response(200, f'{verb.title()} over to "{new}" instead of "{candidate}"')
                elif cluster.failover is None or cluster.failover.is_empty:
                    reason = agent.last_switchover_result
                    # leaderless with the key gone: someone may still take the lock; only a stated reason ends it
                    if new is not None or reason:
                        message = f"{action.title()} failed"
                        return Response(503, f"{message}: {reason}" if reason else message)
            if time.monotonic() >= deadline:
                break
        return Response(503, f"{action.title()} status unknown after {timeout:.0f} seconds; "
                             "operation may still be in progress")

    def delete_switchover(self, request: Request) -> Response:
        cluster = self.agent.read_cluster()
        failover = cluster.failover if cluster is not None else None
        if failover is None or not failover.scheduled_at:
            return Response(404, "no switchover is scheduled")
        try:
            ok = self.agent.dcs.put(keys.FAILOVER, codec.encode_failover(None, None),
                                    mod_revision=failover.mod_revision)
        except CtlError as exc:
            log.warning("cannot clear the failover key: %s", exc)
            ok = False
        if not ok:
            return Response(409, error=True)
        self.agent.wake.set()
        return Response(200, "scheduled switchover deleted")


def register_switchover(api: ApiServer, agent: Any, *, fetch: PeerFetcher, status: Callable[[], NodeStatus] | None = None,
                        poll_interval: float = POLL_INTERVAL, poll_timeout: float | None = None,
                        lag_grace: float = LAG_GRACE) -> None:
    """Add POST /switchover, POST /failover and DELETE /switchover to `api`."""
    handlers = Switchover(agent, fetch, status or (lambda: agent.status()), poll_interval, poll_timeout, lag_grace)
    api.register("POST", "switchover", handlers.post_switchover, body="required")
    api.register("POST", "failover", handlers.post_failover, body="required")
    api.register("DELETE", "switchover", handlers.delete_switchover)
