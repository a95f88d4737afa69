"""The CLI's etcd client: etcd's v3 JSON gRPC-gateway over the standard library only.

Why not python-etcd3: importing grpc + etcd3 costs 100-200 ms, and `hactl list` must start in well under 0.2 s.
Patroni talks to etcd the same way. Every call is bounded by one overall timeout; endpoints are tried in turn.
Secrets (password, token) are never put into an error message.

HTTP is spoken by a 60-line keep-alive client on a plain socket: http.client alone costs ~15 ms of imports (email
parsing, ssl), a tenth of the start-up budget, and its timeouts are per socket operation rather than per request.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

from ctl.config import EtcdSettings
from ctl.dcs import keys
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.errors import CasFailed, ConfigError, DcsError, DcsUnavailable, ResultUnknown
from ctl.model import Cluster

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 10.0
_FIRST_TRY = 0.5  # seconds for one endpoint in the first round when others are still untried
# API prefixes by etcd version: 3.4+ serves /v3, 3.3 /v3beta, 3.2 /v3alpha. Tried in this order on a 404.
_API_PREFIXES = ("/v3", "/v3beta", "/v3alpha")
# gRPC status codes that etcd returns in the gateway's JSON error body.
_GRPC_UNAUTHENTICATED = 16
_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE = 4


def b64(data: str | bytes) -> str:
    """etcd's gateway wants keys and values as base64 strings."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> str:
    if not text:
        return ""
    return base64.b64decode(text).decode("utf-8", errors="replace")


def parse_range_response(body: dict[str, Any]) -> tuple[list[KeyValue], int]:
    """A `kv/range` JSON response -> (key/values, header revision). Numbers arrive as strings (int64 in JSON)."""
    kvs = [
        KeyValue(
            key=unb64(kv.get("key")),
            value=unb64(kv.get("value")),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv["lease"]) if kv.get("lease") not in (None, "0", 0) else None,
            create_revision=int(kv.get("create_revision", 0)),
        )
        for kv in body.get("kvs") or ()
    ]
    return kvs, int((body.get("header") or {}).get("revision", 0))


class _EtcdAnswer(Exception):
    """etcd answered with an error body: not a transport failure, so the next endpoint would not help."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _HttpError(Exception):
    """The server broke the HTTP exchange (closed early, garbage)."""


class _StaleConnection(_HttpError):
    """A kept-alive connection that the server had closed: safe to retry on a new one."""


class _HttpConnection:
    """A minimal HTTP/1.1 client: POST with a JSON body, keep-alive, Content-Length or chunked answers.

    Every socket operation gets the time left until the request's deadline, so a request never outlives it.
    """

    def __init__(self, host: str, port: int, ssl_context: Any = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self.sent = False  # the last request reached the socket: a failure after this may have been applied

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._buf.clear()

    def post(self, path: str, body: bytes, headers: dict[str, str], deadline: float) -> tuple[int, bytes]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self.sent = False
        for attempt in range(2):
            fresh = self.sock is None
            try:
                if fresh:
                    self._open(deadline)
                self._timeout(deadline)
                assert self.sock is not None
                self.sock.sendall(request)
                self.sent = True
                status, data, keep = self._read_response(deadline, fresh)
            except (_StaleConnection, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
                self.sent = False  # an idle connection the server had closed: it never read the request
                continue
            except BaseException:
                self.close()
                raise
            if not keep:
                self.close()
            return status, data
        raise _HttpError("no answer")  # not reached

    def _open(self, deadline: float) -> None:
        # An ASCII host as bytes skips the idna codec import (~3 ms) that getaddrinfo does for str hosts.
        host: str | bytes = self.host.encode("ascii") if self.host.isascii() else self.host
        sock = socket.create_connection((host, self.port), timeout=max(deadline - time.monotonic(), 0.001))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _timeout(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        assert self.sock is not None
        self.sock.settimeout(left)

    def _fill(self, deadline: float, first: bool = False) -> None:
        self._timeout(deadline)
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            if first:
                raise _StaleConnection("connection closed before the answer")
            raise _HttpError("connection closed in the middle of the answer")
        self._buf += chunk

    def _read_until(self, marker: bytes, deadline: float, first: bool = False) -> bytes:
        while True:
            i = self._buf.find(marker)
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[: i + len(marker)]
                return out
            if len(self._buf) > 1 << 20:
                raise _HttpError("answer header too long")
            self._fill(deadline, first and not self._buf)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_response(self, deadline: float, fresh: bool) -> tuple[int, bytes, bool]:
        head = self._read_until(b"\r\n\r\n", deadline, first=not fresh).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _HttpError(f"not an HTTP answer: {lines[0][:60]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self._read_until(b"\r\n", deadline).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline):  # trailers (etcd sends one) end with a blank line
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_until(b"\r\n", deadline)
            return status, bytes(body), keep
        if "content-length" in headers:
            return status, self._read_exact(int(headers["content-length"]), deadline), keep
        while True:  # no length: the body ends when the server closes
            try:
                self._fill(deadline)
            except _HttpError:
                return status, bytes(self._read_exact(len(self._buf), deadline)), False


class _Endpoint:
    """One etcd URL with its kept-alive connection, API prefix and auth token."""

    def __init__(self, url: str, host: str, port: int, tls: bool) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.tls = tls
        self.conn: _HttpConnection | None = None
        self.api = _API_PREFIXES[0]
        self.token: str | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class EtcdGateway:
    """A small etcd v3 client for the CLI: prefix reads, compare-and-set writes, deletes."""

    def __init__(self, settings: EtcdSettings, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0 or timeout > MAX_TIMEOUT:
            raise ConfigError(f"--timeout must be between 0 and {MAX_TIMEOUT:g} seconds, got {timeout:g}")
        self._settings = settings
        self._timeout = timeout
        tls = settings.protocol == "https"
        self._endpoints = [_Endpoint(url, h, p, tls) for url, (h, p) in zip(settings.endpoints, settings.hosts)]
        self._ssl_context = self._make_ssl_context() if tls else None

    # ------------------------------------------------------------------------------------------------ public API

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(e.url for e in self._endpoints)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` in one linearizable range read.

        Raises:
            DcsUnavailable: no endpoint answered within the timeout.
            DcsError: etcd refused the request (auth, permissions).
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw))})
        return parse_range_response(body)

    def get_cluster(self, namespace: str, scope: str) -> Cluster:
        """One consistent snapshot of `/<namespace>/<scope>/`.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        prefix = keys.cluster_prefix(namespace, scope)
        kvs, revision = self.get_prefix(prefix)
        return parse_cluster(scope, prefix, kvs, revision)

    def get_all_clusters(self, namespace: str) -> list[Cluster]:
        """Every cluster under the namespace, from ONE range read (`list --all`), sorted by scope.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        ns = keys.namespace_prefix(namespace)
        kvs, revision = self.get_prefix(ns)
        by_scope: dict[str, list[KeyValue]] = {}
        for kv in kvs:
            rest = kv.key[len(ns):]
            if "/" in rest:
                by_scope.setdefault(rest.split("/", 1)[0], []).append(kv)
        return [parse_cluster(scope, keys.cluster_prefix(namespace, scope), group, revision)
                for scope, group in sorted(by_scope.items())]

    def count_prefix(self, prefix: str) -> int:
        """How many keys are under `prefix` (nothing but the count is transferred).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "count_only": True})
        return int(body.get("count", 0))

    def first_keys(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` key names under `prefix` in key order (keys only).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "keys_only": True, "limit": int(limit)})
        return [unb64(kv.get("key")) for kv in body.get("kvs") or ()]

    def delete_range(self, start: str, end: str) -> int:
        """Delete the keys in [start, end); returns how many were deleted.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        body = self._call("/kv/deleterange", {"key": b64(start), "range_end": b64(end)})
        return int(body.get("deleted", 0))

    def etcd_members(self) -> list[dict[str, Any]]:
        """etcd's own member list: [{"name", "clientURLs", "peerURLs"}].

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        body = self._call("/cluster/member/list", {})
        return [m for m in body.get("members") or () if isinstance(m, dict)]

    def endpoint_health(self, url: str, timeout: float = 2.0) -> tuple[bool, str | None]:
        """GET <url>/health on one etcd member: (healthy, why not)."""
        import urllib.request

        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout,
                                        context=self._ssl_context if url.startswith("https") else None) as resp:
                data = json.loads(resp.read().decode("utf-8") or "{}")
        except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer, said in words
            return False, _describe_transport(exc) if isinstance(exc, OSError) else str(exc)
        healthy = str(data.get("health")).lower() == "true"
        return healthy, None if healthy else str(data.get("reason") or data)

    def list_clusters(self, namespace: str) -> list[str]:
        """Names of the clusters that have keys under the namespace (keys only; values are not transferred).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = keys.namespace_prefix(namespace).encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "keys_only": True})
        names = set()
        for kv in body.get("kvs") or ():
            rest = unb64(kv.get("key"))[len(raw.decode("utf-8")):]
            if "/" in rest:
                names.add(rest.split("/", 1)[0])
        return sorted(names)

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> int:
        """Write `key`; with `mod_revision` only if the key is unchanged, with `create` only if it is absent.

        Returns the new revision.

        Raises:
            CasFailed: the comparison failed (someone changed the key first).
            ResultUnknown: a compare-and-set was sent and its answer was lost (it is not sent twice).
            DcsUnavailable, DcsError: see get_prefix.
        """
        request = {"request_put": {"key": b64(key), "value": b64(value)}}
        compare = self._compare(key, mod_revision, create)
        if not compare:
            body = self._call("/kv/put", request["request_put"])
            return int((body.get("header") or {}).get("revision", 0))
        return self._txn(key, compare, request)

    def delete(self, key: str, *, mod_revision: int | None = None) -> int:
        """Delete `key`, only if unchanged when `mod_revision` is given. Returns the new revision.

        Raises:
            CasFailed, ResultUnknown, DcsUnavailable, DcsError: see put.
        """
        request = {"request_delete_range": {"key": b64(key)}}
        compare = self._compare(key, mod_revision, False)
        if not compare:
            body = self._call("/kv/deleterange", request["request_delete_range"])
            return int((body.get("header") or {}).get("revision", 0))
        return self._txn(key, compare, request)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        if not prefix.strip("/"):
            raise DcsError("refusing to delete the whole keyspace")
        raw = prefix.encode("utf-8")
        body = self._call("/kv/deleterange", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw))})
        return int(body.get("deleted", 0))

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()

    def __enter__(self) -> "EtcdGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ internals

    @staticmethod
    def _compare(key: str, mod_revision: int | None, create: bool) -> list[dict[str, Any]]:
        if create:
            return [{"key": b64(key), "target": "CREATE", "create_revision": "0", "result": "EQUAL"}]
        if mod_revision is not None:
            return [{"key": b64(key), "target": "MOD", "mod_revision": str(mod_revision), "result": "EQUAL"}]
        return []

    def _txn(self, key: str, compare: list[dict[str, Any]], request: dict[str, Any]) -> int:
        body = self._call("/kv/txn", {"compare": compare, "success": [request], "failure": []}, idempotent=False)
        if not body.get("succeeded"):  # the gateway omits false booleans
            raise CasFailed(f"{key} was changed by someone else since it was read")
        return int((body.get("header") or {}).get("revision", 0))

    def _make_ssl_context(self) -> Any:
        import ssl

        s = self._settings
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if s.cacert:
                ctx.load_verify_locations(cafile=s.cacert)
            else:
                # The system store, named explicitly: SSL_CERT_FILE/REQUESTS_CA_BUNDLE must not change what we trust.
                paths = ssl.get_default_verify_paths()
                if paths.openssl_cafile and _exists(paths.openssl_cafile):
                    ctx.load_verify_locations(cafile=paths.openssl_cafile)
                if paths.openssl_capath and _exists(paths.openssl_capath):
                    ctx.load_verify_locations(capath=paths.openssl_capath)
            if s.cert:
                ctx.load_cert_chain(s.cert, s.key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"etcd TLS files (cacert={s.cacert}, cert={s.cert}, key={s.key}): "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx

    def _post(self, endpoint: _Endpoint, path: str, payload: dict[str, Any], deadline: float,
              auth: bool = True) -> dict[str, Any]:
        """One HTTP POST. Transport problems raise OSError/_HttpError; etcd errors raise _EtcdAnswer."""
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if auth and endpoint.token:
            headers["Authorization"] = endpoint.token
        if endpoint.conn is None:
            endpoint.conn = _HttpConnection(endpoint.host, endpoint.port, self._ssl_context)
        status, raw = endpoint.conn.post(endpoint.api + path, data, headers, deadline)
        if status == 404 and endpoint.api != _API_PREFIXES[-1]:
            endpoint.api = _API_PREFIXES[_API_PREFIXES.index(endpoint.api) + 1]
            return self._post(endpoint, path, payload, deadline, auth)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if status != 200 or not isinstance(body, dict) or ("error" in body and "header" not in body):
            if not isinstance(body, dict):
                raise _HttpError(f"HTTP {status} with a non-JSON body")
            code = body.get("code")
            message = str(body.get("message") or body.get("error") or f"HTTP {status}")
            raise _EtcdAnswer(status, code if isinstance(code, int) else None, message)
        return body

    def _authenticate(self, endpoint: _Endpoint, deadline: float) -> None:
        s = self._settings
        try:
            body = self._post(endpoint, "/auth/authenticate", {"name": s.username, "password": s.password or ""},
                              deadline, auth=False)
        except _EtcdAnswer as exc:
            if "authentication is not enabled" in exc.message:  # credentials configured, auth off: go on without
                endpoint.token = ""
                return
            raise
        token = body.get("token")
        if not token:
            raise _EtcdAnswer(200, None, "etcd returned no auth token")
        endpoint.token = str(token)

    def _call(self, path: str, payload: dict[str, Any], idempotent: bool = True) -> dict[str, Any]:
        """POST to the first endpoint that answers, within the overall timeout.

        A non-idempotent request (a compare-and-set txn) is not sent again once it may have reached etcd.

        Raises:
            DcsUnavailable: no endpoint answered in time.
            ResultUnknown: a non-idempotent request was sent and no answer came back.
            DcsError: an endpoint answered with an error.
        """
        deadline = time.monotonic() + self._timeout
        failures: list[str] = []
        n = len(self._endpoints)
        # Two rounds: a member restarting or a leader election is often over after a moment.
        for round_ in range(2):
            for i, endpoint in enumerate(list(self._endpoints)):
                remaining = deadline - time.monotonic()
                if remaining <= 0.05:
                    break
                # A hung (e.g. SIGSTOPped) endpoint must not eat the budget while others wait untried: in the first
                # round each endpoint but the last gets at most _FIRST_TRY (a live etcd answers in milliseconds);
                # the second round gives whoever is left the rest of the budget.
                left = n - i if round_ == 0 else 1
                per_try = remaining if left <= 1 else min(remaining / left, _FIRST_TRY)
                try:
                    body = self._call_endpoint(endpoint, path, payload, time.monotonic() + per_try)
                except _EtcdAnswer as exc:
                    if exc.code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE) or exc.status in (502, 503, 504):
                        failures.append(f"{endpoint.url}: {exc.message}")
                        continue
                    raise DcsError(f"etcd at {endpoint.url} refused the request: {_describe_refusal(exc.message)}") \
                        from None
                except (OSError, _HttpError) as exc:
                    if not idempotent and endpoint.conn is not None and endpoint.conn.sent:
                        raise ResultUnknown(f"etcd at {endpoint.url} did not answer a write "
                                            f"({_describe_transport(exc)}); it may or may not have been applied") \
                            from None
                    failures.append(f"{endpoint.url}: {_describe_transport(exc)}")
                    continue
                self._prefer(endpoint)
                return body
            remaining = deadline - time.monotonic()
            if remaining <= 0.3:
                break
            time.sleep(0.2)
        reason = failures[-1].split(": ", 1)[1] if failures else f"no answer within {self._timeout:g}s"
        if len({f.split(": ", 1)[1] for f in failures}) > 1:
            reason = "; ".join(dict.fromkeys(failures))
        raise DcsUnavailable(f"cannot reach etcd at {', '.join(self.endpoints)}: {reason}")

    def _call_endpoint(self, endpoint: _Endpoint, path: str, payload: dict[str, Any],
                       deadline: float) -> dict[str, Any]:
        """Authenticate if needed, then POST; everything within `deadline` (time.monotonic())."""
        if self._settings.username and endpoint.token is None:
            self._authenticate(endpoint, deadline)
        try:
            return self._post(endpoint, path, payload, deadline)
        except _EtcdAnswer as exc:
            # Tokens expire (simple tokens after 5 min) and are local to one etcd member: renew once.
            if self._settings.username and (exc.code == _GRPC_UNAUTHENTICATED or "invalid auth token" in exc.message):
                endpoint.token = None
                self._authenticate(endpoint, deadline)
                return self._post(endpoint, path, payload, deadline)
            raise

    def _prefer(self, endpoint: _Endpoint) -> None:
        """Keep using the endpoint that answered."""
        if self._endpoints[0] is not endpoint:
            self._endpoints.remove(endpoint)
            self._endpoints.insert(0, endpoint)


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


def _describe_transport(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror or exc})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text


def _describe_refusal(message: str) -> str:
    text = message.removeprefix("etcdserver: ")
    if text == "user name is empty":
        return "authentication is enabled on etcd; set username and password in the etcd3 section"
    return text
