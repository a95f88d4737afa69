"""The agent's connection to etcd: building the python-etcd3 client, authenticating, choosing endpoints, mapping
errors. Used by ctl.dcs.etcd3 (the DCS operations) and ctl.dcs.etcd3_watch (the prefix watch).

Endpoints are tried in a fixed order, never at random (python-etcd3's constructor authenticates against a random
endpoint without failover; see /work/shared/reference/etcd-client.md, bug 6):

  * Construction and authentication try every endpoint in turn, in configured order, each at most once: one dead
    or frozen member costs at most one `timeout`, never a failed start.
  * A call goes to the endpoint that answered last. When that one fails (connection refused, timeout), the same
    call moves on to the other endpoints in configured order, each at most once, and stops after `majority`
    timeouts (a majority of frozen members means no quorum: waiting longer cannot help). The endpoint that answers
    becomes the one used next. So with 3 members, a SIGKILLed member costs about nothing and a SIGSTOPped one at
    most one `timeout`, once.

python-etcd3's own endpoint lock-out (bug 3) is bypassed: we pick the endpoint for each attempt ourselves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, TypeVar

# The agent forks PostgreSQL tools while grpc threads run; grpc's fork handlers then crash the child before
# exec (seen: SIGSEGV/abort in pg_basebackup). We never use grpc in a forked child, so turn them off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import etcd3  # noqa: E402
import etcd3.etcdrpc as etcdrpc  # noqa: E402
import etcd3.exceptions as etcd3_exc  # noqa: E402
import grpc  # noqa: E402
from etcd3.client import EtcdTokenCallCredentials  # noqa: E402

from ctl.config import EtcdSettings  # noqa: E402
from ctl.errors import DcsError, DcsUnavailable  # noqa: E402

log = logging.getLogger("ctl.dcs.etcd3")

T = TypeVar("T")

# Reconnect quickly after an etcd restart (grpc's default backoff grows to 120 s) and detect a dead server under a
# long-lived watch stream. grpc uses min_reconnect_backoff as the connect-attempt timeout (default 20 s): 1 s lets a
# hung endpoint be skipped fast while leaving a loaded machine time for a TLS handshake. etcd rejects pings more
# frequent than --grpc-keepalive-min-time (5 s) and pings without an active stream: hence 10 s and
# permit_without_calls=0.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 0),
]

UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                               grpc.StatusCode.CANCELLED})
_UNAVAILABLE_EXC = (etcd3_exc.ConnectionFailedError, etcd3_exc.ConnectionTimeoutError,
                    etcd3_exc.NoServerAvailableError, etcd3_exc.WatchTimedOut)
_TIMEOUT_EXC = (etcd3_exc.ConnectionTimeoutError, etcd3_exc.WatchTimedOut)
# Keep a replaced client this long before closing its channels: other threads may still be mid-call on it.
_RETIRE_GRACE = 30.0


class LeaseGone(Exception):
    """etcd said the lease a request referred to does not exist (expired or revoked)."""


def is_auth_token_error(details: str) -> bool:
    return "invalid auth token" in details or "auth: revision in header is old" in details


def _is_lease_not_found(details: str) -> bool:
    return "requested lease not found" in details


def majority(n: int) -> int:
    """How many members of an n-member etcd cluster form a quorum."""
    return n // 2 + 1


class EtcdConnection:
    """A python-etcd3 client that is (re)built on demand and called with deterministic endpoint failover."""

    def __init__(self, settings: EtcdSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = float(timeout)
        self.where = ",".join(settings.endpoints)
        self._labels = [f"{host}:{port}" for host, port in settings.hosts]
        self._max_timeouts = majority(len(self._labels))
        self._lock = threading.Lock()
        self._client: Any = None
        self._preferred = 0  # index of the endpoint that answered last: the next client starts there
        self._retired: list[tuple[Any, float]] = []
        self._unreachable_logged = False
        self._announced = False  # "talking to <endpoint>" logged once, then on every change
        self._closed = False
        self.on_endpoint_failed: Callable[[str], None] | None = None  # the watch re-arms when its endpoint fails
        self.rebuilds = 0  # how often an expired auth token made us rebuild the client (for tests/diagnostics)
        self._outcome = threading.local()  # per thread: when its last call found no endpoint (None: it answered)

    # ------------------------------------------------------------------------------------------- building

    def _credentials(self) -> grpc.ChannelCredentials | None:
        s = self.settings
        if s.protocol != "https":
            return None

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise DcsError(f"cannot read etcd TLS file {path}: {exc.strerror or exc}") from None

        return grpc.ssl_channel_credentials(read(s.cacert), read(s.key), read(s.cert))

    def _build(self) -> Any:
        """A client whose current endpoint is the first one, in order from the preferred one, that authenticated
        (or simply the preferred one without auth: the first call then fails over like any other).

        Raises:
            DcsUnavailable: no endpoint answered the authentication.
            DcsError: etcd refused the credentials.
        """
        s = self.settings
        creds = self._credentials()
        endpoints = [etcd3.Endpoint(host, port, secure=creds is not None, creds=creds, time_retry=0,
                                    opts=_CHANNEL_OPTIONS) for host, port in s.hosts]
        # No user/password here: the constructor would authenticate against a random endpoint. We do it below.
        client = etcd3.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=self.timeout, failover=True)
        order = self._order(self._preferred)
        user = s.username if s.username and s.password is not None else None
        if not user:
            _use(client, self._labels[order[0]])
            return client
        request = etcdrpc.AuthenticateRequest(name=user, password=s.password)
        last: grpc.RpcError | None = None
        for index in order:
            label = self._labels[index]
            try:
                resp = etcdrpc.AuthStub(client.endpoints[label].channel).Authenticate(request, self.timeout)
            except grpc.RpcError as exc:
                if exc.code() in UNAVAILABLE_CODES:
                    last = exc
                    continue
                _close_quietly(client)
                raise self.map_rpc(exc, "authenticate") from None
            _use(client, label)
            client.metadata = (("token", resp.token),)
            # Over plaintext grpc refuses call credentials ("sufficient security level"); the token still goes
            # out as metadata, which etcd accepts.
            client.call_credentials = (grpc.metadata_call_credentials(EtcdTokenCallCredentials(
                resp.token)) if creds is not None else None)
            self._preferred = index
            return client
        _close_quietly(client)
        code = last.code().name if last is not None else "no endpoint"
        raise DcsUnavailable(f"etcd at {self.where} is unreachable (authenticate: {code})")

    def _order(self, first: int) -> list[int]:
        """`first`, then every other endpoint in configured order."""
        return [first] + [i for i in range(len(self._labels)) if i != first]

    def client(self) -> Any:
        """The current client, built on first use.

        Raises:
            DcsUnavailable, DcsError: as _build().
        """
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise DcsError("the etcd client is closed")
            if self._client is None:
                self._client = self._build()
            return self._client

    def rebuild(self, old: Any) -> None:
        """Drop `old` (token expired); the next call builds a new client."""
        with self._lock:
            if self._client is old and old is not None:
                log.info("etcd auth token rejected by %s; re-authenticating", self.where)
                self.rebuilds += 1
                self._client = None
                now = time.monotonic()
                self._retired.append((old, now))
                keep = []
                for client, since in self._retired:
                    if now - since > _RETIRE_GRACE:
                        _close_quietly(client)
                    else:
                        keep.append((client, since))
                self._retired = keep

    def last_failure(self) -> float | None:
        """time.monotonic() at which the calling thread's last call gave up because no endpoint answered, or None
        when that call got an answer (per thread: the HA loop must not see the REST or watch threads' calls)."""
        return getattr(self._outcome, "failed_at", None)

    def current_label(self, client: Any) -> str:
        return str(getattr(client, "_current_ep_label", None) or self._labels[self._preferred])

    # ------------------------------------------------------------------------------------------- calling

    def map_rpc(self, exc: grpc.RpcError, what: str) -> DcsError:
        code = exc.code()
        details = (exc.details() or "").strip()
        if code in UNAVAILABLE_CODES:
            return DcsUnavailable(f"etcd at {self.where} is unreachable ({what}: {code.name})")
        return DcsError(f"etcd at {self.where} refused {what}: {code.name}: {details}")

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run fn(client) on the current endpoint, then on each other one in turn while they fail; map errors.

        Raises:
            DcsUnavailable: no endpoint answered (or a majority of them timed out).
            DcsError: etcd refused the request.
            LeaseGone: etcd does not know the lease the request referred to.
        """
        try:
            client = self.client()
        except DcsUnavailable:
            self._outcome.failed_at = time.monotonic()
            raise
        tried: list[str] = []
        timeouts = 0
        token_retry = True
        failure: DcsError | None = None
        while True:
            label = self._next_label(client, tried, timeouts)
            if label is None:
                break
            _use(client, label)
            tried.append(label)
            try:
                result = fn(client)
            except grpc.RpcError as exc:
                details = exc.details() or ""
                if _is_lease_not_found(details):
                    self._outcome.failed_at = None
                    raise LeaseGone() from None
                if is_auth_token_error(details) and self.settings.username and token_retry:
                    token_retry = False
                    self.rebuild(client)
                    client = self.client()
                    tried.pop()
                    continue
                if exc.code() not in UNAVAILABLE_CODES:
                    self._outcome.failed_at = None  # etcd answered (with a refusal)
                    raise self.map_rpc(exc, what) from None
                failure = self.map_rpc(exc, what)
                timeouts += exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            except _UNAVAILABLE_EXC as exc:
                failure = DcsUnavailable(f"etcd at {self.where} is unreachable ({what}: {type(exc).__name__})")
                timeouts += isinstance(exc, _TIMEOUT_EXC)
            except etcd3_exc.Etcd3Exception as exc:
                failure = DcsError(f"etcd at {self.where} failed {what}: {type(exc).__name__}")
            except ValueError as exc:  # a channel closed by a client rebuild in another thread
                failure = DcsUnavailable(f"etcd at {self.where} is unreachable ({what}: {exc})")
            else:
                self._outcome.failed_at = None
                self._answered(label)
                return result
            self._endpoint_failed(label)
            if timeouts >= self._max_timeouts:
                break
        self._note_unreachable(True, what)
        if isinstance(failure, DcsUnavailable):
            self._outcome.failed_at = time.monotonic()
        assert failure is not None
        raise failure

    def _next_label(self, client: Any, tried: list[str], timeouts: int) -> str | None:
        if not tried:
            return self.current_label(client)
        for label in self._labels:
            if label not in tried:
                return label
        if len(tried) == 1 and not timeouts:
            # A single endpoint that failed fast (e.g. a channel still reconnecting after an etcd restart) gets
            # a second chance; a timed-out one does not (the HA loop needs a hung etcd to fail within one timeout).
            return tried[0]
        return None

    def _answered(self, label: str) -> None:
        index = self._labels.index(label) if label in self._labels else 0
        if index != self._preferred or not self._announced:
            self._announced = True
            log.info("etcd: talking to %s", label)
        self._preferred = index
        self._note_unreachable(False, "")

    def _endpoint_failed(self, label: str) -> None:
        callback = self.on_endpoint_failed
        if callback is not None:
            try:
                callback(label)
            except Exception:  # noqa: BLE001 - a notification must not break the call
                pass

    def _note_unreachable(self, down: bool, what: str) -> None:
        """Log an outage once when it starts and once when it ends."""
        if down and not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("etcd at %s is unreachable (%s)", self.where, what)
        elif not down and self._unreachable_logged:
            self._unreachable_logged = False
            log.info("etcd at %s is reachable again", self.where)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            retired, self._retired = self._retired, []
        for c in [client] + [c for c, _ in retired]:
            if c is not None:
                _close_quietly(c)


def _use(client: Any, label: str) -> None:
    """Make `label` the client's current endpoint, forgetting python-etcd3's lock-out of it."""
    endpoint = client.endpoints.get(label)
    if endpoint is None:
        return
    endpoint.last_failed = 0
    if getattr(client, "_current_ep_label", None) != label:
        client._current_endpoint_label = label  # the setter drops the stubs bound to the old channel


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass
