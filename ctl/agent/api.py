"""The agent's Patroni-compatible REST API: a stdlib ThreadingHTTPServer with a ROUTES table.

Patroni's paths, JSON keys and status codes are the contract (compare /work/shared/reference/
patroni-4.1.5-observed/rest/). The server is built from injected callables, so it runs without PostgreSQL:

    ApiServer(settings, *, scope, name, version, get_status, read_cluster, get_dynamic_config=None,
              observed_status=None)
    .register(method, segment, handler, *, unsafe=True, body="none")   handler(Request) -> Response
    .start() / .stop() (idempotent) / .address -> (host, port) actually bound / .url

Built-in routes (GET, ctl/agent/api_get.py): /patroni /cluster /history /config /metrics /liveness /readiness
/failsafe; every other GET path, and every HEAD/OPTIONS request, is a health check (`/`, /primary,
/replica?lag=&replication_state=&tag_k=v, /read-only, /sync, /async, /quorum, /health, ...): GET answers with the
status JSON, HEAD/OPTIONS with the status line only. POST/PUT/PATCH/DELETE go to registered handlers only (501
otherwise, as Patroni), after access control (ctl/agent/api_access.py: allowlist -> client certificate -> Basic
auth). `body="required"|"optional"` makes the framework read the JSON body first: a missing Content-Length gives
411, bad JSON 400 (Patroni's `_read_json_content`).

`get_status` is called per request; the agent passes ctl.agent.live.LiveStatus.status (PostgreSQL read at request
time) and the loop's own status as `observed_status` (for /liveness). Bodies and health rules are pure functions in
ctl/agent/api_render.py.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from ctl.agent.api_access import AccessControl, build_allowlist
from ctl.agent.api_get import GetRoutes
from ctl.agent.api_types import BadRequest, Handler, Request, Response
from ctl.config import RestApiSettings
from ctl.errors import ConfigError, CtlError
from ctl.model import Cluster, NodeStatus

__all__ = ["ApiServer", "BadRequest", "Handler", "Request", "Response", "build_allowlist"]

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_BODY = 1 << 20  # no Patroni request body comes near 1 MiB; refuse to buffer more (413)
_MAX_DRAIN = 16 << 20


@dataclass(frozen=True)
class _Route:
    handler: Handler
    unsafe: bool
    body: str  # none | optional | required


# ------------------------------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16
    api: "ApiServer"

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the request thread, so that a slow client cannot block accept().
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(10)
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("exception while serving a request from %s", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # seconds a client may take to send its request
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("API %s - %s", self.client_address[0], format % args)

    def _dispatch(self) -> None:
        self.server.api._handle(self)

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class ApiServer:
    """Patroni-compatible REST API of one agent, served from a background thread."""

    def __init__(self, settings: RestApiSettings, *, scope: str, name: str, version: str,
                 get_status: Callable[[], NodeStatus],
                 read_cluster: Callable[[], Cluster | None],
                 get_dynamic_config: Callable[[], Mapping[str, Any] | None] | None = None,
                 observed_status: Callable[[], NodeStatus] | None = None) -> None:
        self.settings = settings
        self.scope = scope
        self.name = name
        self.version = version
        self.get_status = get_status
        self.read_cluster = read_cluster
        self.routes: dict[tuple[str, str], _Route] = {}
        self.access = AccessControl(settings, read_cluster)
        self.get_routes = GetRoutes(scope=scope, get_status=get_status, read_cluster=read_cluster,
                                    get_dynamic_config=get_dynamic_config, observed_status=observed_status,
                                    started=lambda: self._started)
        self._verify_client = self.access.verify_client
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- lifecycle

    def register(self, method: str, segment: str, handler: Handler, *, unsafe: bool = True,
                 body: str = "none") -> None:
        """Route `<METHOD> /<segment>[/...]` to handler(Request) -> Response.

        `unsafe` runs check_access first (always true for POST/PUT/PATCH/DELETE). `body`: "none" (raw bytes in
        Request.body), "optional" (JSON object in Request.data, {} when absent) or "required" (411 without
        Content-Length, 400 on bad JSON or an empty object).
        """
        if body not in ("none", "optional", "required"):
            raise ValueError(f"body must be none, optional or required, not {body!r}")
        method = method.upper()
        self.routes[(method, segment.strip("/"))] = _Route(handler, unsafe or method in UNSAFE_METHODS, body)

    def _listen(self) -> tuple[str, int]:
        listen = self.settings.listen or "127.0.0.1:8008"
        host, _, port = listen.rpartition(":") if ":" in listen else (listen, "", "8008")
        host = host.strip("[]")
        if host in ("", "*"):
            host = "0.0.0.0"
        try:
            return host, int(port or 8008)
        except ValueError:
            raise ConfigError(f"restapi.listen must be <host>:<port>, got {listen!r}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=s.cafile)
        try:
            ctx.load_cert_chain(certfile=s.certfile or "", keyfile=s.keyfile, password=s.keyfile_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load restapi.certfile {s.certfile}: {exc}") from None
        modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
        if self._verify_client:
            if self._verify_client in modes:
                ctx.verify_mode = modes[self._verify_client]
            else:
                log.error("bad value in restapi.verify_client: %s", self._verify_client)
        return ctx

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            ConfigError: restapi.listen is malformed or the TLS files cannot be loaded.
            CtlError: the address cannot be bound.
        """
        with self._lock:
            if self._server is not None:
                return
            host, port = self._listen()
            server_class = _Server6 if ":" in host else _Server
            try:
                server = server_class((host, port), _Handler)
            except OSError as exc:
                raise CtlError(f"cannot start the REST API on {host}:{port}: {exc.strerror or exc}") from None
            server.api = self
            if self.settings.certfile:
                try:
                    server.socket = self._ssl_context().wrap_socket(server.socket, server_side=True,
                                                                    do_handshake_on_connect=False)
                except CtlError:
                    server.server_close()
                    raise
            self._server = server
            self._started = time.time()
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="rest-api", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call more than once."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise CtlError("the REST API is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{self.settings.protocol}://{f'[{host}]' if ':' in host else host}:{port}"

    # ------------------------------------------------------------------------------------------- dispatch

    def _handle(self, rh: _Handler) -> None:
        method = rh.command
        parts = urlsplit(rh.path)
        path = parts.path or "/"
        query = parse_qs(parts.query)
        segment = path.lstrip("/").split("/")[0]
        peer = None
        if isinstance(rh.connection, ssl.SSLSocket):
            try:
                peer = rh.connection.getpeercert() or None
            except ValueError:
                peer = None
        request = Request(method=method, path=path, query=query, headers=rh.headers,
                          client_address=(str(rh.client_address[0]), int(rh.client_address[1])), peer_cert=peer)
        if self._verify_client == "required" and self.settings.certfile and not peer:
            return self._write(rh, Response(403, "client certificate required"))
        try:
            response = self._route(rh, request, segment)
        except Exception:  # noqa: BLE001 - one bad request must not kill the server thread
            log.exception("REST API handler for %s %s failed", method, path)
            response = Response(500, "internal error", error=True)
        if response is None:
            log.error("REST API handler for %s %s returned no response", method, path)
            response = Response(500, "internal error", error=True)
        try:
            self._drain(rh, request)
            self._write(rh, response)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            log.debug("client %s went away: %s", rh.client_address[0], exc)

    @staticmethod
    def _drain(rh: _Handler, request: Request) -> None:
        """Read an unread request body (refused before reading it) so that closing the socket does not reset the
        connection before the client has read our answer."""
        if request.body_read:
            return
        try:
            remaining = min(int(rh.headers.get("Content-Length") or 0), _MAX_DRAIN)
        except ValueError:
            return
        while remaining > 0:
            chunk = rh.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)

    def _route(self, rh: _Handler, request: Request, segment: str) -> Response:
        method = request.method
        route = self.routes.get((method, segment))
        if route is not None:
            if route.unsafe:
                denied = self.access.check(request)
                if denied is not None:
                    return denied
            if route.body != "none" or method in UNSAFE_METHODS:
                bad = self._read_body(rh, request, route.body)
                if bad is not None:
                    return bad
            try:
                return route.handler(request)
            except BadRequest:
                return Response(400, error=True)
            except CtlError as exc:
                return Response(503, exc.message)
        if method == "GET":
            return self.get_routes.get(segment, request)
        if method in ("HEAD", "OPTIONS"):
            return self.get_routes.health(request, status_only=True)
        # Patroni has no do_POST/do_PUT/...: the stdlib answers 501 (patronictl relies on it for /switchover).
        return Response(501, f"Unsupported method ({method!r})", error=True)

    def _read_body(self, rh: _Handler, request: Request, mode: str) -> Response | None:
        length_header = rh.headers.get("Content-Length")
        if length_header is None:
            if mode == "required":
                return Response(411, error=True)
            request.data = {} if mode == "optional" else None
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            return Response(400, error=True)
        if length > _MAX_BODY:
            return Response(413, error=True)
        request.body = rh.rfile.read(length) if length else b""
        request.body_read = True
        if mode == "none":
            return None
        if not request.body and mode == "optional":
            request.data = {}
            return None
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            log.debug("bad JSON in %s %s", request.method, request.path)
            return Response(400, error=True)
        if not isinstance(data, dict) or (not data and mode == "required"):
            return Response(400, error=True)
        request.data = data
        return None

    def _write(self, rh: _Handler, response: Response) -> None:
        if response.status_only:
            reason = rh.responses.get(response.status, ("",))[0]
            rh.wfile.write(f"{rh.protocol_version} {response.status} {reason}\r\n\r\n".encode("utf-8"))
            rh.log_request(response.status)
            return
        if response.error:
            message = None
            if isinstance(response.body, str) and response.body:
                message = response.body
            rh.send_error(response.status, message)
            return
        payload, content_type = response.encode()
        rh.send_response(response.status)
        rh.send_header("Content-Type", content_type)
        for key, value in response.headers.items():
            rh.send_header(key, value)
        rh.end_headers()
        if rh.command != "HEAD":
            rh.wfile.write(payload)

    def check_access(self, request: Request) -> Response | None:
        """None when the request may proceed; otherwise the 403/401 response. Allowlist, client cert, Basic auth."""
        return self.access.check(request)
