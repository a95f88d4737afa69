"""httpx client for the members' Patroni-compatible REST APIs: one method per endpoint.

httpx is imported lazily (it costs ~150 ms) so that commands that never call a member stay fast. TLS settings come
from the config explicitly (an ssl.SSLContext), never from REQUESTS_CA_BUNDLE/SSL_CERT_FILE, and proxies from the
environment are ignored (trust_env=False). httpx errors become RestError here, at the edge.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from ctl.config import Config
from ctl.errors import ConfigError, RestError, RestUnreachable  # noqa: F401 - RestUnreachable re-exported
from ctl.model import Member

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0
_MAX_WORKERS = 16


@dataclass(frozen=True)
class RestAnswer:
    """A member's answer to an unsafe request: Patroni answers in plain text or JSON, with meaningful codes."""

    status: int
    text: str
    data: Any = None  # the JSON body, when there is one

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class RestClient:
    """Talks to members' REST APIs. Safe (GET) calls carry no credentials; unsafe ones use Basic auth."""

    def __init__(self, config: Config, *, insecure: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 transport: Any = None) -> None:
        self._config = config
        self._insecure = insecure or config.ctl.insecure
        self._timeout = timeout
        self._transport = transport
        self._client: Any = None

    # ------------------------------------------------------------------------------------------------ endpoints

    def get_patroni(self, member: Member) -> dict[str, Any]:
        """`GET /patroni`: the member's status JSON.

        Raises:
            RestError: unreachable, a non-200 answer, or not JSON.
        """
        return self._json("GET", member, "/patroni")

    def get_health(self, member: Member, path: str = "/primary", timeout: float | None = None) -> int:
        """A health check such as `GET /primary`: only the status code (200 or 503) matters.

        Raises:
            RestError: unreachable.
        """
        return self._request("GET", member, path, timeout=timeout).status_code

    def post_switchover(self, member: Member, leader: str | None, candidate: str | None,
                        scheduled_at: str | None = None, timeout: float | None = None) -> RestAnswer:
        """`POST /switchover {leader, candidate, scheduled_at?}`; an immediate one answers when it is over.

        Raises:
            RestUnreachable: no connection (the request was not sent).
            RestError: sent, but no answer (it may be in progress).
        """
        body: dict[str, Any] = {"leader": leader, "candidate": candidate}
        if scheduled_at:
            body["scheduled_at"] = scheduled_at
        return self._answer("POST", member, "/switchover", body, timeout)

    def post_failover(self, member: Member, candidate: str, leader: str | None = None,
                      timeout: float | None = None) -> RestAnswer:
        """`POST /failover {candidate, leader?}`.

        Raises:
            RestUnreachable, RestError: see post_switchover.
        """
        body: dict[str, Any] = {"candidate": candidate}
        if leader:
            body["leader"] = leader
        return self._answer("POST", member, "/failover", body, timeout)

    def delete_switchover(self, member: Member) -> RestAnswer:
        """`DELETE /switchover`: drop a scheduled switchover (200, or 404 when none is scheduled).

        Raises:
            RestError: unreachable.
        """
        return self._answer("DELETE", member, "/switchover")

    def post_restart(self, member: Member, conditions: dict[str, Any] | None = None,
                     timeout: float | None = None) -> RestAnswer:
        """`POST /restart {schedule?, postgres_version?, restart_pending?, timeout?, role?}`.

        Raises:
            RestError: unreachable, or no answer within `timeout`.
        """
        return self._answer("POST", member, "/restart", conditions or None, timeout)

    def delete_restart(self, member: Member) -> RestAnswer:
        """`DELETE /restart`: drop a scheduled restart (200, or 404 when none is scheduled).

        Raises:
            RestError: unreachable.
        """
        return self._answer("DELETE", member, "/restart")

    def post_reload(self, member: Member) -> RestAnswer:
        """`POST /reload` (202: the agent reloads its configuration soon).

        Raises:
            RestError: unreachable.
        """
        return self._answer("POST", member, "/reload")

    def post_reinitialize(self, member: Member, force: bool = False, from_leader: bool = False) -> RestAnswer:
        """`POST /reinitialize {force, from_leader}`.

        Raises:
            RestError: unreachable.
        """
        return self._answer("POST", member, "/reinitialize", {"force": force, "from_leader": from_leader})

    def patch_config(self, member: Member, patch: dict[str, Any]) -> RestAnswer:
        """`PATCH /config`: merge `patch` into the dynamic config (null deletes a key); 200 with the new config.

        Raises:
            RestError: unreachable.
        """
        return self._answer("PATCH", member, "/config", patch)

    # ------------------------------------------------------------------------------------------------ helpers

    def map(self, fn: Callable[[Member], T], members: Sequence[Member]) -> list[T | RestError]:
        """Call `fn` on every member concurrently; a failed member yields its RestError, in input order."""
        if not members:
            return []

        def guarded(m: Member) -> T | RestError:
            try:
                return fn(m)
            except RestError as exc:
                return exc

        self._http()  # build the shared client once, before the threads race for it
        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(members))) as pool:
            return list(pool.map(guarded, members))

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """ctl.authentication, else restapi.authentication (Patroni's order). Used for unsafe endpoints only."""
        ctl, rest = self._config.ctl, self._config.restapi
        if ctl.username:
            return ctl.username, ctl.password or ""
        if rest.username:
            return rest.username, rest.password or ""
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ssl_context(self) -> Any:
        import ssl

        ctl, rest = self._config.ctl, self._config.restapi
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if self._insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                cafile = ctl.cacert or rest.cafile
                if cafile:
                    ctx.load_verify_locations(cafile=cafile)
                else:
                    paths = ssl.get_default_verify_paths()  # the system store, not SSL_CERT_FILE
                    import os

                    if paths.openssl_cafile and os.path.exists(paths.openssl_cafile):
                        ctx.load_verify_locations(cafile=paths.openssl_cafile)
                    if paths.openssl_capath and os.path.exists(paths.openssl_capath):
                        ctx.load_verify_locations(capath=paths.openssl_capath)
            if ctl.certfile:
                ctx.load_cert_chain(ctl.certfile, ctl.keyfile or None, ctl.keyfile_password or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"REST API TLS files (ctl.cacert/restapi.cafile/ctl.certfile): "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            from ctl import __version__

            kwargs: dict[str, Any] = {"timeout": self._timeout, "trust_env": False,
                                      "headers": {"User-Agent": f"hactl/{__version__}"}}
            if self._transport is not None:
                kwargs["transport"] = self._transport
            else:
                kwargs["verify"] = self._ssl_context()
            self._client = httpx.Client(**kwargs)
        return self._client

    def _request(self, method: str, member: Member, path: str, *, json_body: Any = None,
                 unsafe: bool = False, timeout: float | None = None) -> Any:
        import httpx

        base = member.api_base
        if not base:
            raise RestUnreachable(f"member {member.name} has no api_url in the DCS")
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if unsafe and self.basic_auth:
            kwargs["auth"] = httpx.BasicAuth(*self.basic_auth)
        if timeout is not None:
            # connecting keeps the short timeout; only the wait for the answer is longer
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(self._timeout, timeout))
        wait = timeout if timeout is not None else self._timeout
        try:
            return self._http().request(method, base + path, **kwargs)
        except httpx.ConnectTimeout:
            raise RestUnreachable(f"{base}{path}: cannot connect within {min(self._timeout, wait):g}s") from None
        except httpx.ConnectError as exc:
            raise RestUnreachable(f"{base}{path}: {_describe(exc)}") from None
        except httpx.TimeoutException:
            raise RestError(f"{base}{path}: no answer within {wait:g}s") from None
        except httpx.HTTPError as exc:
            raise RestError(f"{base}{path}: {_describe(exc)}") from None

    def _answer(self, method: str, member: Member, path: str, body: Any = None,
                timeout: float | None = None) -> RestAnswer:
        resp = self._request(method, member, path, json_body=body, unsafe=True, timeout=timeout)
        text = resp.text.strip()
        data = None
        if "json" in resp.headers.get("content-type", ""):
            try:
                data = resp.json()
            except ValueError:
                data = None
        return RestAnswer(resp.status_code, text, data)

    def _json(self, method: str, member: Member, path: str) -> dict[str, Any]:
        resp = self._request(method, member, path)
        if resp.status_code != 200:
            raise RestError(f"{member.name}: {method} {path} answered HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            raise RestError(f"{member.name}: {method} {path} did not return JSON") from None
        if not isinstance(data, dict):
            raise RestError(f"{member.name}: {method} {path} returned {type(data).__name__}, expected an object")
        return data


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused"
    return text
