"""The agent's unsafe REST endpoints: switchover/failover, restart, reload, reinitialize, dynamic config.

Patroni's paths, request bodies, validation order, status codes and messages are the contract
(/work/shared/reference/patronictl.md §6.3). hactl improvements, all additive to Patroni's wording:
- a refused switchover says why each candidate was rejected (nofailover, unreachable, lag vs maximum_lag_on_failover);
- `Switchover failed` carries the HA loop's reason (`agent.last_switchover_result`) when it has one;
- an immediate switchover is confirmed only once the new leader's member key says primary/running, polling every
  0.2 s for max(30, 2*loop_wait) s;
- `PATCH /config` and `PUT /config` refuse a dynamic config that breaks the timing rules (400, ctl.dynconfig).

Access checks (allowlist, client certificate, Basic auth) and JSON body parsing (411/400) happen in ApiServer before
any handler here runs. A handler never blocks the HA loop: work that touches PostgreSQL is queued with
`agent.submit`, and a switchover is a compare-and-set write of the `failover` key that the leader's loop acts on.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ctl.agent.api import ApiServer, Request, Response
from ctl.agent.peers import fetch_peers
from ctl.dcs import codec, keys
from ctl.dynconfig import patch_config, validate_dynamic_config
from ctl.errors import CtlError
from ctl.ha import eligibility
from ctl.ha.state import PeerView
from ctl.model import Cluster, Member

if TYPE_CHECKING:  # the real Agent pulls in PostgreSQL control; handlers need only its attributes
    from ctl.agent.loop import Agent

log = logging.getLogger("hactl.agent")

POLL_INTERVAL = 0.2  # seconds between DCS reads while waiting for a switchover's outcome (Patroni: 1 s)
MIN_POLL_TIMEOUT = 30.0  # wait at least this long, or 2*loop_wait when longer (Patroni: 2*max(10, loop_wait))
PEER_TIMEOUT = 1.0  # GET /patroni of each candidate
RESTART_ROLES = ("primary", "standby_leader", "replica")
RESTART_KEYS = ("schedule", "role", "postgres_version", "timeout", "restart_pending")
_LEADER_ROLES = ("primary", "master", "standby_leader")

PeerFetcher = Callable[..., Mapping[str, PeerView]]


# ------------------------------------------------------------------------------------------------- pure helpers


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


def postgres_version_to_int(text: Any) -> int:
    """`15.4` -> 150004, `9.6.24` -> 90624, as Patroni.

    Raises:
        ValueError: with Patroni's message, when the text is not a PostgreSQL version.
    """
    text = str(text)
    try:
        parts = [int(p) for p in text.split(".")]
    except ValueError:
        raise ValueError(f"Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}") from None
    if len(parts) < 2 or (len(parts) == 2 and parts[0] < 10) or len(parts) > 3:
        raise ValueError(f"Invalid PostgreSQL version: {text}")
    if len(parts) == 2:
        parts.insert(1, 0)
    return int("".join(f"{p:02d}" for p in parts))


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1", "y")
    return bool(value)


def _positive_seconds(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    if text.endswith("s"):
        text = text[:-1].strip()
    try:
        seconds = int(float(text))
    except ValueError:
        return None
    return seconds if seconds > 0 else None


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


# ------------------------------------------------------------------------------------------------- handlers


class _Operations:
    def __init__(self, agent: Any, fetch: PeerFetcher, poll_interval: float, poll_timeout: float | None) -> None:
        self.agent = agent
        self.fetch = fetch
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self._restart_lock = threading.Lock()

    # --------------------------------------------------------------------------------------- switchover

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
        sync_only = action == "switchover" and cluster.synchronous_mode == "on"
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
        optime = self._optime(cluster) if leader_is_healthy(cluster) else None
        max_lag = int(self.agent.settings.maximum_lag_on_failover)
        peers = self.fetch(members, timeout=PEER_TIMEOUT)
        reasons = []
        for m in members:
            reason = rejection(m, peers.get(m.name), optime, max_lag)
            if reason is None:
                return None
            reasons.append(f"{m.name}: {reason}")
        if candidate:
            return f"candidate {candidate} is not healthy: {reasons[0].partition(': ')[2]}"
        return f"{action} is not possible: no good candidates have been found: {'; '.join(reasons)}"

    def _optime(self, cluster: Cluster) -> int | None:
        """The leader's WAL position: /status optime, or fresher, our own when we are the leader."""
        values = [cluster.optime]
        if cluster.leader is not None and cluster.leader.name == self.agent.name:
            values.append(getattr(self.agent.status(), "xlog_location", None))
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

    # --------------------------------------------------------------------------------------- restart

    def post_restart(self, request: Request) -> Response:
        agent = self.agent
        data: dict[str, Any] = dict(request.data or {})
        try:
            cluster = agent.read_cluster()
        except CtlError:
            cluster = agent.cluster
        if data:
            log.debug("received restart request: %s", data)
        if cluster is not None and cluster.is_paused and "schedule" in data:
            return Response(500, "Can't schedule restart in the paused state")
        for key in list(data):  # Patroni checks the keys in the order they were sent
            value = data[key]
            if key == "schedule":
                status, error, when = parse_schedule(value, "restart")
                if error:
                    return Response(status or 400, error)
                data[key] = when.isoformat() if when else value
            elif key == "role":
                if value == "master":
                    data[key] = value = "primary"
                if value not in RESTART_ROLES:
                    return Response(400, "PostgreSQL role should be either primary, standby_leader, or replica")
            elif key == "postgres_version":
                try:
                    postgres_version_to_int(value)
                except ValueError as exc:
                    return Response(400, str(exc))
            elif key == "timeout":
                seconds = _positive_seconds(value)
                if seconds is None:
                    return Response(400, "Timeout should be a positive number of seconds")
                data[key] = seconds
            elif key != "restart_pending":
                return Response(400, f"Unknown filter for the scheduled restart: {key}")
        if "schedule" in data:
            return self._schedule_restart(data)
        status = agent.status()
        if not restart_matches(data, status):
            return Response(503, "restart conditions are not satisfied")
        if agent.busy:
            return Response(503, f"{agent.busy} already in progress")
        timeout = data.get("timeout") or self._primary_start_timeout(cluster)
        result = agent.submit("restart", {"timeout": timeout}, wait=True, timeout=timeout + 30)
        if result.ok:
            return Response(200, "restarted successfully")
        return Response(503, result.message or "restart failed")

    def _schedule_restart(self, data: dict[str, Any]) -> Response:
        agent = self.agent
        with self._restart_lock:
            if agent.scheduled_restart:
                return Response(409, "Another restart is already scheduled")
            entry = {"schedule": data["schedule"],
                     "postmaster_start_time": getattr(agent.status(), "postmaster_start_time", None)}
            entry.update({k: v for k, v in data.items() if k in RESTART_KEYS and k != "schedule"})
            agent.scheduled_restart = entry
        agent.wake.set()  # publish it in the member key now
        return Response(202, "Restart scheduled")

    @staticmethod
    def _primary_start_timeout(cluster: Cluster | None) -> int:
        value = cluster.config.data.get("primary_start_timeout", 300) if cluster and cluster.config else 300
        return _positive_seconds(value) or 300

    def delete_restart(self, request: Request) -> Response:
        with self._restart_lock:
            if not self.agent.scheduled_restart:
                return Response(404, "no restarts are scheduled")
            self.agent.scheduled_restart = None
        self.agent.wake.set()
        return Response(200, "scheduled restart deleted")

    # --------------------------------------------------------------------------------------- reload, reinit

    def post_reload(self, request: Request) -> Response:
        # Queued for the loop thread; even when it does not start within 5 s it runs after the current task.
        result = self.agent.submit("reload", wait=False, timeout=5)
        if not result.ok:
            log.info("reload queued behind %s", self.agent.busy or "the HA loop")
        return Response(202, "reload scheduled")

    def post_reinitialize(self, request: Request) -> Response:
        agent = self.agent
        data = request.data or {}
        force = _bool(data.get("force"))
        from_leader = _bool(data.get("from_leader"))
        try:
            cluster = agent.read_cluster()
        except CtlError:
            cluster = agent.cluster
        if cluster is None or cluster.leader is None:
            return Response(503, "Cluster has no leader, can not reinitialize")
        if cluster.leader.name == agent.name:
            return Response(503, "I am the leader, can not reinitialize")
        if agent.busy and not force:
            return Response(503, f"{agent.busy} already in progress")
        result = agent.submit("reinitialize", {"force": force, "from_leader": from_leader}, wait=False, timeout=10)
        if not result.ok:
            return Response(503, result.message)
        return Response(200, "reinitialize started")

    # --------------------------------------------------------------------------------------- config

    def patch_config(self, request: Request) -> Response:
        cluster = self.agent.read_cluster()
        if cluster is None or cluster.config is None or not cluster.config.mod_revision:
            return Response(503, error=True)
        old = dict(cluster.config.data)
        new = patch_config(old, request.data)
        if new != old:
            problems = validate_dynamic_config(new, current=old)  # old mistakes do not block an unrelated change
            if problems:
                return Response(400, "; ".join(problems))
            if not self.agent.dcs.put(keys.CONFIG, codec.dumps(new), mod_revision=cluster.config.mod_revision):
                return Response(409, error=True)
        self.agent.wake.set()
        return Response(200, new)

    def put_config(self, request: Request) -> Response:
        new = request.data
        try:
            cluster = self.agent.read_cluster()
        except CtlError:
            cluster = None
        current = dict(cluster.config.data) if cluster is not None and cluster.config is not None else None
        problems = validate_dynamic_config(new, current=current)
        if problems:
            return Response(400, "; ".join(problems))
        if not (cluster is not None and cluster.config is not None and cluster.config.mod_revision
                and dict(cluster.config.data) == new):
            try:
                ok = self.agent.dcs.put(keys.CONFIG, codec.dumps(new))
            except CtlError as exc:
                log.warning("cannot write the config key: %s", exc)
                ok = False
            if not ok:
                return Response(502, error=True)
        self.agent.wake.set()
        return Response(200, new)


def restart_matches(conditions: Mapping[str, Any], status: Any) -> bool:
    """Patroni's `restart_matches`: role equal, running version older than postgres_version, pending restart."""
    role = conditions.get("role")
    if role and role != getattr(status, "role", None):
        return False
    version = conditions.get("postgres_version")
    if version:
        running = getattr(status, "server_version", None)
        if running is None or postgres_version_to_int(version) <= int(running):
            return False
    if _bool(conditions.get("restart_pending")) and not getattr(status, "pending_restart", False):
        return False
    return True


def register_operations(api: ApiServer, agent: "Agent", *, fetch: PeerFetcher = fetch_peers,
                        poll_interval: float = POLL_INTERVAL, poll_timeout: float | None = None) -> None:
    """Add the unsafe endpoints to `api`, acting on `agent` (ctl.agent.loop.Agent or a test double).

    `fetch` asks candidates for `GET /patroni` (members, timeout=) -> {name: PeerView}; `poll_timeout` overrides
    max(30, 2*loop_wait) for the wait on an immediate switchover.
    """
    ops = _Operations(agent, fetch, poll_interval, poll_timeout)
    api.register("POST", "switchover", ops.post_switchover, body="required")
    api.register("POST", "failover", ops.post_failover, body="required")
    api.register("DELETE", "switchover", ops.delete_switchover)
    api.register("POST", "restart", ops.post_restart, body="optional")
    api.register("DELETE", "restart", ops.delete_restart)
    api.register("POST", "reload", ops.post_reload)
    api.register("POST", "reinitialize", ops.post_reinitialize, body="optional")
    api.register("PATCH", "config", ops.patch_config, body="required")
    api.register("PUT", "config", ops.put_config, body="required")
