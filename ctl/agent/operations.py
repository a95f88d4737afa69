"""The agent's unsafe REST endpoints: restart, reload, reinitialize, dynamic config, and (ctl/agent/switchover.py)
switchover/failover.

Patroni's paths, request bodies, validation order, status codes and messages are the contract
(/work/shared/reference/patronictl.md §6.3). hactl improvements, all additive to Patroni's wording:
- `PATCH /config` and `PUT /config` refuse a dynamic config that breaks the timing rules (400, ctl.dynconfig);
- the switchover checks of ctl/agent/switchover.py (live positions, per-candidate reasons, verified outcome).

Access checks (allowlist, client certificate, Basic auth) and JSON body parsing (411/400) happen in ApiServer before
any handler here runs. A handler never blocks the HA loop: work that touches PostgreSQL is queued with
`agent.submit`, and a switchover is a compare-and-set write of the `failover` key that the leader's loop acts on.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ctl.agent.api import ApiServer, Request, Response
from ctl.agent.peers import fetch_peers
from ctl.agent.switchover import (  # noqa: F401 - leader_is_healthy, rejection: part of this module's surface
    LAG_GRACE,
    POLL_INTERVAL,
    PeerFetcher,
    leader_is_healthy,
    parse_schedule,
    register_switchover,
    rejection,
)
from ctl.dcs import codec, keys
from ctl.dynconfig import patch_config, validate_dynamic_config
from ctl.errors import CtlError
from ctl.model import Cluster, NodeStatus

if TYPE_CHECKING:  # the real Agent pulls in PostgreSQL control; handlers need only its attributes
    from ctl.agent.loop import Agent

log = logging.getLogger("hactl.agent")

RESTART_ROLES = ("primary", "standby_leader", "replica")
RESTART_KEYS = ("schedule", "role", "postgres_version", "timeout", "restart_pending")


# ------------------------------------------------------------------------------------------------- pure helpers


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


# ------------------------------------------------------------------------------------------------- handlers


class _Operations:
    def __init__(self, agent: Any, status: Callable[[], NodeStatus]) -> None:
        self.agent = agent
        self.status = status
        self._restart_lock = threading.Lock()

    # --------------------------------------------------------------------------------------- switchover

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
        status = self.status()
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
                     "postmaster_start_time": getattr(self.status(), "postmaster_start_time", None)}
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
                        status: Callable[[], NodeStatus] | None = None, poll_interval: float = POLL_INTERVAL,
                        poll_timeout: float | None = None, lag_grace: float = LAG_GRACE) -> None:
    """Add the unsafe endpoints to `api`, acting on `agent` (ctl.agent.loop.Agent or a test double).

    `fetch` asks members for `GET /patroni` (members, timeout=) -> {name: PeerView}; `status()` is our NodeStatus
    (default agent.status; the agent passes ctl.agent.live.LiveStatus.status); `poll_timeout` overrides
    max(30, 2*loop_wait) for the wait on an immediate switchover; `lag_grace`: see ctl/agent/switchover.py.
    """
    register_switchover(api, agent, fetch=fetch, status=status, poll_interval=poll_interval,
                        poll_timeout=poll_timeout, lag_grace=lag_grace)
    ops = _Operations(agent, status or (lambda: agent.status()))
    api.register("POST", "restart", ops.post_restart, body="optional")
    api.register("DELETE", "restart", ops.delete_restart)
    api.register("POST", "reload", ops.post_reload)
    api.register("POST", "reinitialize", ops.post_reinitialize, body="optional")
    api.register("PATCH", "config", ops.patch_config, body="required")
    api.register("PUT", "config", ops.put_config, body="required")
