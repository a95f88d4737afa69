"""The REST API's GET routes: /patroni, /cluster, /history, /config, /failsafe, /metrics, /liveness, /readiness and
the health checks (every other GET path, and HEAD/OPTIONS of any path).

`get_status()` is read per request. In the agent it is ctl.agent.live.LiveStatus.status: PostgreSQL positions, role
and recovery state read when the request arrives, or the HA loop's observation with `observed_age_s` when PostgreSQL
cannot answer. /liveness is about the HA loop alone and never reads PostgreSQL. Bodies and codes: ctl/agent/api_render.py.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from ctl.agent.api_render import (
    cluster_json,
    health_status,
    history_json,
    liveness_status,
    metrics_text,
    readiness_status,
    status_json,
)
from ctl.agent.api_types import Request, Response
from ctl.errors import CtlError
from ctl.model import Cluster, NodeStatus

BUILTIN_GET = ("patroni", "cluster", "history", "config", "metrics", "liveness", "readiness", "failsafe")


class GetRoutes:
    def __init__(self, *, scope: str, get_status: Callable[[], NodeStatus],
                 read_cluster: Callable[[], Cluster | None],
                 get_dynamic_config: Callable[[], Mapping[str, Any] | None] | None,
                 observed_status: Callable[[], NodeStatus] | None = None,
                 started: Callable[[], float] = time.time) -> None:
        """`observed_status`: the HA loop's own NodeStatus, given when `get_status` reads PostgreSQL at request
        time; /liveness then uses it, and /cluster shows our own entry from `get_status`. `started()`: when the
        server started (liveness before the first loop)."""
        self.scope = scope
        self.get_status = get_status
        self.observed_status = observed_status or get_status
        self.live_cluster_entry = observed_status is not None
        self.read_cluster = read_cluster
        self.get_dynamic_config = get_dynamic_config
        self.started = started

    def get(self, segment: str, request: Request) -> Response:
        """GET of a built-in path, else the health check for the path."""
        if segment in BUILTIN_GET:
            return getattr(self, f"_get_{segment}")(request)
        return self.health(request, status_only=False)

    def health(self, request: Request, *, status_only: bool) -> Response:
        st = self.get_status()
        code = health_status(st, request.path, request.query)
        if status_only:
            return Response(code, status_only=True)
        return Response(code, status_json(st))

    def _get_patroni(self, request: Request) -> Response:
        return Response(200, status_json(self.get_status()))

    def _get_cluster(self, request: Request) -> Response:
        try:
            cluster = self.read_cluster()
        except CtlError as exc:
            return Response(503, exc.message)
        local = self.get_status() if self.live_cluster_entry else None
        return Response(200, cluster_json(cluster, self.scope, local=local))

    def _get_history(self, request: Request) -> Response:
        try:
            cluster = self.read_cluster()
        except CtlError as exc:
            return Response(503, exc.message)
        return Response(200, history_json(cluster))

    def _get_config(self, request: Request) -> Response:
        try:
            if self.get_dynamic_config is not None:
                data = self.get_dynamic_config()
            else:
                cluster = self.read_cluster()
                data = cluster.config.data if cluster and cluster.config and cluster.config.mod_revision else None
        except CtlError as exc:
            return Response(503, exc.message)
        if data is None:
            return Response(502, error=True)
        return Response(200, dict(data))

    def _get_failsafe(self, request: Request) -> Response:
        try:
            cluster = self.read_cluster()
        except CtlError:
            cluster = None
        # As Patroni's code (not its docstring): 200 whenever the key holds a dict, also after failsafe_mode was
        # switched off (the leader never deletes the key); 502 otherwise.
        if cluster is not None and isinstance(cluster.failsafe, Mapping):
            return Response(200, dict(cluster.failsafe))
        return Response(502, error=True)

    def _get_metrics(self, request: Request) -> Response:
        return Response(200, metrics_text(self.get_status()), content_type="text/plain")

    def _get_liveness(self, request: Request) -> Response:
        return Response(liveness_status(self.observed_status(), time.time(), self.started()), status_only=True)

    def _get_readiness(self, request: Request) -> Response:
        return Response(readiness_status(self.get_status(), request.query), status_only=True)
