"""The agent's Patroni-compatible REST API: a stdlib ThreadingHTTPServer with a ROUTES table.

Patroni's paths, JSON keys and status codes are the contract (compare /work/shared/reference/
patroni-4.1.5-observed/rest/). The server is built from injected callables, so it runs without PostgreSQL:

    ApiServer(settings, *, scope, name, version, get_status, read_cluster, get_dynamic_config=None)
    .register(method, segment, handler, *, unsafe=True, body="none")   handler(Request) -> Response
    .start() / .stop() (idempotent) / .address -> (host, port) actually bound / .url

Built-in routes (GET): /patroni /cluster /history /config /metrics /liveness /readiness /failsafe; every other GET
path, and every HEAD/OPTIONS request, is a health check (`/`, /primary, /replica?lag=&replication_state=&tag_k=v,
/read-only, /sync, /async, /quorum, /health, ...): GET answers with the status JSON, HEAD/OPTIONS with the status
line only. POST/PUT/PATCH/DELETE go to registered handlers only (501 otherwise, as Patroni), after `check_access`
(allowlist -> client certificate -> Basic auth). `body="required"|"optional"` makes the framework read the JSON
body first: a missing Content-Length gives 411, bad JSON 400 (Patroni's `_read_json_content`).

The bodies and health rules are pure functions in ctl/agent/api_render.py.

NodeStatus may carry these optional attributes (read with getattr, default in brackets): `latest_end_lsn` [None],
`failsafe_mode_is_active` [False], `watchdog_failed` [False].
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

from ctl.agent.api_render import (
    cluster_json,
    health_status,
    history_json,
    liveness_status,
    metrics_text,
    readiness_status,
    status_json,
)
from ctl.config import RestApiSettings
from ctl.errors import ConfigError, CtlError
from ctl.model import Cluster, NodeStatus

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BUILTIN_GET = ("patroni", "cluster", "history", "config", "metrics", "liveness", "readiness", "failsafe")
_REALM = 'Basic realm="Patroni"'
_MAX_BODY = 1 << 20  # no Patroni request body comes near 1 MiB; refuse to buffer more (413)
_MAX_DRAIN = 16 << 20

# ------------------------------------------------------------------------------------------------- request/response


class BadRequest(Exception):
    """Raised by `Request.json()`; the framework answers 400."""


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: Mapping[str, list[str]]
    headers: Any  # the request's email.message.Message: .get() is case-insensitive
    body: bytes = b""
    client_address: tuple[str, int] = ("", 0)
    peer_cert: Mapping[str, Any] | None = None
    data: Any = None  # the parsed JSON body when the route declared body="required"/"optional"
    body_read: bool = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            BadRequest: the body is not valid JSON.
        """
        if self.data is not None:
            return self.data
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(str(exc)) from None


@dataclass
class Response:
    status: int
    body: bytes | str | dict | list = b""
    content_type: str | None = None  # default: application/json for dict/list, text/html for text (as Patroni)
    headers: Mapping[str, str] = field(default_factory=dict)
    status_only: bool = False  # write only `HTTP/1.0 <code> <reason>` (HEAD/OPTIONS, /liveness, /readiness)
    error: bool = False  # answer with the stdlib error page (`send_error`), as Patroni does for 411/400/502

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body, default=str).encode("utf-8"), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/html"
        return bytes(self.body), self.content_type or "text/html"


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class _Route:
    handler: Handler
    unsafe: bool
    body: str  # none | optional | required


# ------------------------------------------------------------------------------------------------- access control


def _resolve(host: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        infos = socket.getaddrinfo(host, 8080, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        log.error("cannot resolve %s: %s", host, exc)
        return []
    return [ipaddress.ip_network(sa[0], strict=False) for *_, sa in infos]


def build_allowlist(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if "/" in entry:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                log.error("invalid value %r in restapi.allowlist: %s", entry, exc)
        else:
            nets.extend(_resolve(entry))
    return tuple(nets)


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
                 get_dynamic_config: Callable[[], Mapping[str, Any] | None] | None = None) -> None:
        self.settings = settings
        self.scope = scope
        self.name = name
        self.version = version
        self.get_status = get_status
        self.read_cluster = read_cluster
        self.get_dynamic_config = get_dynamic_config
        self.routes: dict[tuple[str, str], _Route] = {}
        self._allowlist = build_allowlist(settings.allowlist)
        self._auth_key: bytes | None = None
        if settings.username is not None and settings.password is not None:
            self._auth_key = base64.b64encode(f"{settings.username}:{settings.password}".encode("utf-8"))
        self._verify_client = (settings.verify_client or "").lower() or None
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
                denied = self.check_access(request)
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
            if segment in _BUILTIN_GET:
                return getattr(self, f"_get_{segment}")(request)
            return self._health(request, status_only=False)
        if method in ("HEAD", "OPTIONS"):
            return self._health(request, status_only=True)
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

    # ------------------------------------------------------------------------------------------- access

    def check_access(self, request: Request) -> Response | None:
        """None when the request may proceed; otherwise the 403/401 response. Allowlist, client cert, Basic auth."""
        allowlist = self._allowlist
        if self.settings.allowlist_include_members:
            allowlist = allowlist + self._member_networks()
        if self._allowlist or self.settings.allowlist_include_members:
            try:
                ip = ipaddress.ip_address(request.client_address[0].split("%")[0])
            except ValueError:
                return Response(403, "Access is denied")
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
            if not any(ip in net for net in allowlist):
                return Response(403, "Access is denied")
        if self.settings.certfile and self._verify_client in ("required", "optional") and not request.peer_cert:
            return Response(403, "client certificate required")
        if self._auth_key is not None:
            header = request.headers.get("Authorization")
            if header is None:
                return Response(401, "no auth header received", headers={"WWW-Authenticate": _REALM})
            if not header.startswith("Basic ") or not hmac.compare_digest(self._auth_key,
                                                                          header[6:].encode("utf-8")):
                return Response(401, "not authenticated", headers={"WWW-Authenticate": _REALM})
        return None

    def _member_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        try:
            cluster = self.read_cluster()
        except CtlError as exc:
            log.debug("allowlist_include_members: cannot read the cluster: %s", exc)
            return ()
        nets = []
        for m in cluster.members if cluster else ():
            if m.api_url:
                host = urlsplit(m.api_url).hostname
                if host:
                    nets.extend(_resolve(host))
        return tuple(nets)

    # ------------------------------------------------------------------------------------------- GET handlers

    def _status(self) -> NodeStatus:
        return self.get_status()

    def _health(self, request: Request, *, status_only: bool) -> Response:
        st = self._status()
        code = health_status(st, request.path, request.query)
        if status_only:
            return Response(code, status_only=True)
        return Response(code, status_json(st))

    def _get_patroni(self, request: Request) -> Response:
        return Response(200, status_json(self._status()))

    def _fresh_cluster(self) -> Cluster | None:
        return self.read_cluster()

    def _get_cluster(self, request: Request) -> Response:
        try:
            cluster = self._fresh_cluster()
        except CtlError as exc:
            return Response(503, exc.message)
        return Response(200, cluster_json(cluster, self.scope))

    def _get_history(self, request: Request) -> Response:
        try:
            cluster = self._fresh_cluster()
        except CtlError as exc:
            return Response(503, exc.message)
        return Response(200, history_json(cluster))

    def _get_config(self, request: Request) -> Response:
        try:
            if self.get_dynamic_config is not None:
                data = self.get_dynamic_config()
            else:
                cluster = self._fresh_cluster()
                data = cluster.config.data if cluster and cluster.config and cluster.config.mod_revision else None
        except CtlError as exc:
            return Response(503, exc.message)
        if data is None:
            return Response(502, error=True)
        return Response(200, dict(data))

    def _get_failsafe(self, request: Request) -> Response:
        try:
            cluster = self._fresh_cluster()
        except CtlError:
            cluster = None
        enabled = bool(cluster and cluster.config and cluster.config.data.get("failsafe_mode") in (True, "true", "on"))
        if cluster is not None and enabled and isinstance(cluster.failsafe, Mapping):
            return Response(200, dict(cluster.failsafe))
        return Response(502, error=True)

    def _get_metrics(self, request: Request) -> Response:
        return Response(200, metrics_text(self._status()), content_type="text/plain")

    def _get_liveness(self, request: Request) -> Response:
        return Response(liveness_status(self._status(), time.time(), self._started), status_only=True)

    def _get_readiness(self, request: Request) -> Response:
        return Response(readiness_status(self._status(), request.query), status_only=True)
