"""httpx client for the members' Patroni-compatible REST APIs: one method per endpoint.

httpx is imported lazily (it costs ~150 ms) so that commands that never call a member stay fast. TLS settings come
from the config explicitly (an ssl.SSLContext), never from REQUESTS_CA_BUNDLE/SSL_CERT_FILE, and proxies from the
environment are ignored (trust_env=False). httpx errors become RestError here, at the edge.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from ctl.config import Config
from ctl.errors import ConfigError, RestError
from ctl.model import Member

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0
_MAX_WORKERS = 16


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
                 unsafe: bool = False) -> Any:
        import httpx

        base = member.api_base
        if not base:
            raise RestError(f"member {member.name} has no api_url in the DCS")
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if unsafe and self.basic_auth:
            kwargs["auth"] = httpx.BasicAuth(*self.basic_auth)
        try:
            return self._http().request(method, base + path, **kwargs)
        except httpx.TimeoutException:
            raise RestError(f"{base}{path}: no answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise RestError(f"{base}{path}: {_describe(exc)}") from None

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
