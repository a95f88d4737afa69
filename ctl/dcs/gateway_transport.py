"""How the CLI's etcd client reaches etcd: endpoints tried in turn within one overall timeout, TLS, auth tokens.

ctl.dcs.gateway builds the key-value requests; this module sends one JSON POST to etcd's v3 gRPC-gateway and
returns the answer or a CtlError. Secrets (password, token) are never put into an error message.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from ctl.config import EtcdSettings
from ctl.dcs.httpconn import HttpConnection, HttpError
from ctl.errors import ConfigError, DcsError, DcsUnavailable, ResultUnknown

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 10.0
_FIRST_TRY = 0.5  # seconds for one endpoint in the first round when others are still untried
# API prefixes by etcd version: 3.4+ serves /v3, 3.3 /v3beta, 3.2 /v3alpha. Tried in this order on a 404.
_API_PREFIXES = ("/v3", "/v3beta", "/v3alpha")
# gRPC status codes that etcd returns in the gateway's JSON error body.
_GRPC_UNAUTHENTICATED = 16
_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE = 4


class _EtcdAnswer(Exception):
    """etcd answered with an error body: not a transport failure, so the next endpoint would not help."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Endpoint:
    """One etcd URL with its kept-alive connection, API prefix and auth token."""

    def __init__(self, url: str, host: str, port: int, tls: bool) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.tls = tls
        self.conn: HttpConnection | None = None
        self.api = _API_PREFIXES[0]
        self.token: str | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class GatewayTransport:
    """Sends JSON POSTs to the first etcd endpoint that answers, keeping connections and auth tokens per endpoint."""

    def __init__(self, settings: EtcdSettings, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0 or timeout > MAX_TIMEOUT:
            raise ConfigError(f"--timeout must be between 0 and {MAX_TIMEOUT:g} seconds, got {timeout:g}")
        self.settings = settings
        self.timeout = timeout
        tls = settings.protocol == "https"
        self.endpoints = [_Endpoint(url, h, p, tls) for url, (h, p) in zip(settings.endpoints, settings.hosts)]
        self.ssl_context = self._make_ssl_context() if tls else None

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(e.url for e in self.endpoints)

    def health(self, url: str, timeout: float = 2.0) -> tuple[bool, str | None]:
        """GET <url>/health on one etcd member: (healthy, why not)."""
        import urllib.request

        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout,
                                        context=self.ssl_context if url.startswith("https") else None) as resp:
                data = json.loads(resp.read().decode("utf-8") or "{}")
        except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer, said in words
            return False, _describe_transport(exc) if isinstance(exc, OSError) else str(exc)
        healthy = str(data.get("health")).lower() == "true"
        return healthy, None if healthy else str(data.get("reason") or data)

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    def call(self, path: str, payload: dict[str, Any], idempotent: bool = True) -> dict[str, Any]:
        """POST to the first endpoint that answers, within the overall timeout.

        A non-idempotent request (a compare-and-set txn) is not sent again once it may have reached etcd.

        Raises:
            DcsUnavailable: no endpoint answered in time.
            ResultUnknown: a non-idempotent request was sent and no answer came back.
            DcsError: an endpoint answered with an error.
        """
        deadline = time.monotonic() + self.timeout
        failures: list[str] = []
        n = len(self.endpoints)
        # Two rounds: a member restarting or a leader election is often over after a moment.
        for round_ in range(2):
            for i, endpoint in enumerate(list(self.endpoints)):
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
                except (OSError, HttpError) as exc:
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
        reason = failures[-1].split(": ", 1)[1] if failures else f"no answer within {self.timeout:g}s"
        if len({f.split(": ", 1)[1] for f in failures}) > 1:
            reason = "; ".join(dict.fromkeys(failures))
        raise DcsUnavailable(f"cannot reach etcd at {', '.join(self.urls)}: {reason}")

    def _call_endpoint(self, endpoint: _Endpoint, path: str, payload: dict[str, Any],
                       deadline: float) -> dict[str, Any]:
        """Authenticate if needed, then POST; everything within `deadline` (time.monotonic())."""
        if self.settings.username and endpoint.token is None:
            self._authenticate(endpoint, deadline)
        try:
            return self._post(endpoint, path, payload, deadline)
        except _EtcdAnswer as exc:
            # Tokens expire (simple tokens after 5 min) and are local to one etcd member: renew once.
            if self.settings.username and (exc.code == _GRPC_UNAUTHENTICATED or "invalid auth token" in exc.message):
                endpoint.token = None
                self._authenticate(endpoint, deadline)
                return self._post(endpoint, path, payload, deadline)
            raise

    def _prefer(self, endpoint: _Endpoint) -> None:
        """Keep using the endpoint that answered."""
        if self.endpoints[0] is not endpoint:
            self.endpoints.remove(endpoint)
            self.endpoints.insert(0, endpoint)


    def _make_ssl_context(self) -> Any:
        import ssl

        s = self.settings
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
        """One HTTP POST. Transport problems raise OSError/HttpError; etcd errors raise _EtcdAnswer."""
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if auth and endpoint.token:
            headers["Authorization"] = endpoint.token
        if endpoint.conn is None:
            endpoint.conn = HttpConnection(endpoint.host, endpoint.port, self.ssl_context)
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
                raise HttpError(f"HTTP {status} with a non-JSON body")
            code = body.get("code")
            message = str(body.get("message") or body.get("error") or f"HTTP {status}")
            raise _EtcdAnswer(status, code if isinstance(code, int) else None, message)
        return body

    def _authenticate(self, endpoint: _Endpoint, deadline: float) -> None:
        s = self.settings
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
