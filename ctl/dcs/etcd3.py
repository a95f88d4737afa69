"""The agent's etcd v3 DCS: leases, leader txns, compare-and-set writes and a self-healing prefix watch.

This is the only module that imports `etcd3` (cslab-etcd3) or `grpc`; every client/grpc exception is turned into
`DcsUnavailable` (no endpoint answered in time) or `DcsError` (etcd answered with an error) here. Messages name
the endpoints, never the password. See /work/shared/reference/etcd-client.md for the client bugs worked around.

Public API (`Etcd3Dcs`); every key argument is relative to `prefix` (`/<namespace>/<scope>/`):

    Etcd3Dcs(settings, namespace, scope, *, timeout=2.0)
    .prefix: str, .scope: str, .lease_id: int | None, .lease_ttl: int | None
    .get_cluster() -> Cluster                         one range read of the prefix -> codec.parse_cluster
    .get(key) -> KeyValue | None                      one key
    .ensure_lease(ttl) -> int                         grant a lease unless ours is alive (local estimate) with this ttl
    .refresh_lease() -> bool                          one keepalive; False: no lease, expired (TTL 0) or etcd unreachable
    .revoke_lease() -> None                           drop our lease now (its keys vanish); best effort
    .touch_member(name, data) -> bool                 members/<name> = compact JSON on our lease; False: no live lease
    .acquire_leader(name) -> bool                     txn create_revision(leader)==0 -> put leader on our lease
    .renew_leader(name) -> bool                       txn value(leader)==name -> put leader on our lease
    .release_leader(name) -> bool                     txn value(leader)==name -> delete leader
    .put(key, value, *, mod_revision=None, create=False, use_lease=False) -> bool     False: CAS lost
    .delete(key, *, mod_revision=None) -> bool        False: CAS lost or key absent
    .initialize(sysid="") -> bool                     create `initialize` if absent (the bootstrap race)
    .watch(callback) -> None                          callback() on every change under the prefix (own thread)
    .set_watch_filter(relevant) -> None               notify only if relevant(is_delete, key, value) for some event
    .close() -> None

Errors: every method except `refresh_lease`, `revoke_lease`, `watch` and `close` raises `DcsUnavailable` when no
endpoint answered within the timeout, and `DcsError` for anything else etcd refused (auth, permissions). A `False`
return always means "etcd answered and the compare failed" (or, for lease-bound writes, our lease is gone).

Threading: one instance is shared by the HA loop, the REST API threads and the watch thread. Calls do not
serialize on a lock (the client is thread-safe); only client (re)construction and lease bookkeeping are locked.

Timeouts: `timeout` is the per-RPC deadline. A failed call is retried once (on the next endpoint); a timed-out
call only when there is another endpoint. So one method takes at most 1 * timeout with one endpoint (hung etcd:
measured 2.00 s for timeout=2) and about 2 * timeout with several. The watch stream has no deadline; grpc
keepalive pings detect a dead server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Mapping, TypeVar

# The agent forks PostgreSQL tools while grpc threads run; grpc's fork handlers then crash the child before
# exec (seen: SIGSEGV/abort in pg_basebackup). We never use grpc in a forked child, so turn them off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import etcd3  # noqa: E402
import etcd3.etcdrpc as etcdrpc
import etcd3.exceptions as etcd3_exc
import grpc
from etcd3.etcdrpc import kv_pb2 as _kv_pb2

from ctl.config import EtcdSettings
from ctl.dcs import codec, keys
from ctl.errors import DcsError, DcsUnavailable
from ctl.model import Cluster

log = logging.getLogger(__name__)

T = TypeVar("T")
_EVENT_DELETE = _kv_pb2.Event.DELETE

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

_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.CANCELLED})
_UNAVAILABLE_EXC = (etcd3_exc.ConnectionFailedError, etcd3_exc.ConnectionTimeoutError,
                    etcd3_exc.NoServerAvailableError, etcd3_exc.WatchTimedOut)
_TIMEOUT_EXC = (etcd3_exc.ConnectionTimeoutError, etcd3_exc.WatchTimedOut)
# Keep a replaced client this long before closing its channels: other threads may still be mid-call on it.
_RETIRE_GRACE = 30.0


class _LeaseGone(Exception):
    """etcd said our lease does not exist (expired or revoked)."""


def _is_auth_token_error(details: str) -> bool:
    return "invalid auth token" in details or "auth: revision in header is old" in details


def _is_lease_not_found(details: str) -> bool:
    return "requested lease not found" in details


class Etcd3Dcs:
    """Patroni's etcd3 DCS operations for one cluster, as used by the agent."""

    def __init__(self, settings: EtcdSettings, namespace: str, scope: str, *, timeout: float = 2.0) -> None:
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.settings = settings
        self.scope = scope
        self.namespace = namespace
        self.prefix = keys.cluster_prefix(namespace, scope)
        self.timeout = float(timeout)
        self._where = ",".join(settings.endpoints)
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._retired: list[tuple[Any, float]] = []
        self._lease_lock = threading.Lock()
        self._lease_id: int | None = None
        self._lease_ttl: int | None = None
        self._lease_deadline = 0.0  # time.monotonic() after which the lease is presumed expired
        self._unreachable_logged = False
        self._closed = False
        self._watch_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._watch_call: Any = None
        self._watch_callbacks: list[Callable[[], None]] = []
        self._watch_filter: Callable[[bool, str, str], bool] | None = None
        self.rebuilds = 0  # how often an expired auth token made us rebuild the client (for tests/diagnostics)

    # ------------------------------------------------------------------------------------------- client plumbing

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

    def _build_client(self) -> Any:
        s = self.settings
        creds = self._credentials()
        # A failed endpoint is locked out for `time_retry` seconds; with a single endpoint there is nowhere else to
        # go, so never lock it out (0) and let the retry reach it again.
        time_retry = 1 if len(s.hosts) > 1 else 0
        user = s.username if s.username and s.password is not None else None
        password = s.password if user else None
        last: BaseException | None = None
        # The constructor authenticates against a random endpoint without failover: try a few times.
        for _ in range(max(2, 2 * len(s.hosts))):
            endpoints = [etcd3.Endpoint(host, port, secure=creds is not None, creds=creds, time_retry=time_retry,
                                        opts=_CHANNEL_OPTIONS) for host, port in s.hosts]
            try:
                client = etcd3.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=self.timeout, user=user,
                                                        password=password, failover=True)
            except grpc.RpcError as exc:
                for ep in endpoints:
                    ep.close()
                last = exc
                if exc.code() in _UNAVAILABLE_CODES:
                    continue
                raise self._map_rpc(exc, "authenticate") from None
            except Exception as exc:  # noqa: BLE001 - the constructor raises assorted types
                for ep in endpoints:
                    ep.close()
                last = exc
                continue
            if user and creds is None:
                # Over plaintext grpc refuses call credentials ("sufficient security level"); the token still goes
                # out as metadata, which etcd accepts.
                client.call_credentials = None
            return client
        if isinstance(last, grpc.RpcError):
            raise DcsUnavailable(f"etcd at {self._where} is unreachable (authenticate: {last.code().name})")
        raise DcsUnavailable(f"etcd at {self._where} is unreachable ({type(last).__name__})")

    def _get_client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._closed:
                raise DcsError("the etcd client is closed")
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _rebuild(self, old: Any) -> None:
        """Drop `old` (token expired); the next call builds a new client."""
        with self._client_lock:
            if self._client is old and old is not None:
                log.info("etcd auth token rejected by %s; re-authenticating", self._where)
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

    def _map_rpc(self, exc: grpc.RpcError, what: str) -> DcsError:
        code = exc.code()
        details = (exc.details() or "").strip()
        if code in _UNAVAILABLE_CODES:
            return DcsUnavailable(f"etcd at {self._where} is unreachable ({what}: {code.name})")
        return DcsError(f"etcd at {self._where} refused {what}: {code.name}: {details}")

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run fn(client), retrying once on a failed endpoint or an expired auth token; map every error.

        Raises:
            DcsUnavailable: no endpoint answered.
            DcsError: etcd refused the request.
            _LeaseGone: etcd does not know the lease the request referred to.
        """
        for attempt in (0, 1):
            last = attempt == 1
            client = self._get_client()
            try:
                result = fn(client)
            except grpc.RpcError as exc:
                details = exc.details() or ""
                if _is_lease_not_found(details):
                    raise _LeaseGone() from None
                if _is_auth_token_error(details) and self.settings.username:
                    self._rebuild(client)
                    if not last:
                        continue
                if exc.code() in _UNAVAILABLE_CODES and not last and self._worth_retry(exc.code()):
                    continue
                self._note_unreachable(exc.code() in _UNAVAILABLE_CODES, what)
                raise self._map_rpc(exc, what) from None
            except _UNAVAILABLE_EXC as exc:
                if not last and not (isinstance(exc, _TIMEOUT_EXC) and len(self.settings.hosts) == 1):
                    continue
                self._note_unreachable(True, what)
                raise DcsUnavailable(f"etcd at {self._where} is unreachable ({what}: {type(exc).__name__})") from None
            except etcd3_exc.Etcd3Exception as exc:
                if not last:
                    continue
                raise DcsError(f"etcd at {self._where} failed {what}: {type(exc).__name__}") from None
            except ValueError as exc:
                # 'Trying to use a failed node' (lock-out) or a closed channel.
                if not last:
                    continue
                self._note_unreachable(True, what)
                raise DcsUnavailable(f"etcd at {self._where} is unreachable ({what}: {exc})") from None
            self._note_unreachable(False, what)
            return result
        raise AssertionError("unreachable")

    def _worth_retry(self, code: grpc.StatusCode) -> bool:
        """A timed-out call is retried only when another endpoint can take it: a hung single etcd would just
        double the wait (the HA loop needs renewals to fail within one timeout)."""
        return code != grpc.StatusCode.DEADLINE_EXCEEDED or len(self.settings.hosts) > 1

    def _note_unreachable(self, down: bool, what: str) -> None:
        """Log an outage once when it starts and once when it ends."""
        if down and not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("etcd at %s is unreachable (%s)", self._where, what)
        elif not down and self._unreachable_logged:
            self._unreachable_logged = False
            log.info("etcd at %s is reachable again", self._where)

    def _key(self, key: str) -> str:
        return self.prefix + key.lstrip("/")

    # ------------------------------------------------------------------------------------------- reads

    def get_cluster(self) -> Cluster:
        """One consistent range read of the whole prefix.

        Raises:
            DcsUnavailable: no endpoint answered.
            DcsError: etcd refused the read.
        """
        resp = self._call("get " + self.prefix, lambda c: c.get_prefix_response(self.prefix))
        kvs = [_kv(kv) for kv in resp.kvs]
        return codec.parse_cluster(self.scope, self.prefix, kvs, resp.header.revision)

    def get(self, key: str) -> codec.KeyValue | None:
        """One key relative to the prefix, or None.

        Raises:
            DcsUnavailable, DcsError.
        """
        full = self._key(key)
        resp = self._call("get " + full, lambda c: c.get_response(full))
        return _kv(resp.kvs[0]) if resp.kvs else None

    # ------------------------------------------------------------------------------------------- leases

    @property
    def lease_id(self) -> int | None:
        """Our lease, or None when we have none or etcd said it expired."""
        return self._lease_id

    @property
    def lease_ttl(self) -> int | None:
        return self._lease_ttl

    def ensure_lease(self, ttl: int) -> int:
        """Return our lease id, granting a new lease when we have none, it (probably) expired, or ttl changed.

        No network call when the current lease is believed alive (refreshed less than its TTL ago).

        Raises:
            DcsUnavailable, DcsError.
        """
        with self._lease_lock:
            if self._lease_id is not None and self._lease_ttl == ttl and time.monotonic() < self._lease_deadline:
                return self._lease_id
            start = time.monotonic()
            lease = self._call("grant lease", lambda c: c.lease(int(ttl)))
            self._lease_id, self._lease_ttl = int(lease.id), int(ttl)
            self._lease_deadline = start + max(int(lease.ttl or ttl), 1)
            log.debug("granted etcd lease %x ttl=%s", self._lease_id, ttl)
            return self._lease_id

    def refresh_lease(self) -> bool:
        """Send one keepalive for our lease. Never raises.

        Returns False when there is no lease, when etcd answers TTL 0 (expired: `lease_id` becomes None), or when
        etcd is unreachable (logged once per outage; `lease_id` is kept, it may still be alive).
        """
        with self._lease_lock:
            lease_id = self._lease_id
            if lease_id is None:
                return False
            start = time.monotonic()
            try:
                responses = self._call("refresh lease", lambda c: list(c.refresh_lease(lease_id)))
            except _LeaseGone:
                responses = []
            except DcsError as exc:
                log.debug("lease refresh failed: %s", exc)
                return False
            ttl = int(responses[0].TTL) if responses else 0
            if ttl <= 0:
                log.info("etcd lease %x expired", lease_id)
                self._lease_id = None
                self._lease_deadline = 0.0
                return False
            self._lease_deadline = start + ttl
            return True

    def revoke_lease(self) -> None:
        """Revoke our lease now (its member/leader keys disappear at once). Best effort; never raises."""
        with self._lease_lock:
            lease_id, self._lease_id, self._lease_deadline = self._lease_id, None, 0.0
        if lease_id is None:
            return
        try:
            self._call("revoke lease", lambda c: c.revoke_lease(lease_id))
        except (DcsError, _LeaseGone) as exc:
            log.debug("lease revoke failed: %s", exc)

    def _live_lease(self) -> int | None:
        lease_id = self._lease_id
        if lease_id is None or time.monotonic() >= self._lease_deadline:
            return None
        return lease_id

    def _lease_gone(self, lease_id: int) -> None:
        with self._lease_lock:
            if self._lease_id == lease_id:
                log.info("etcd lease %x no longer exists", lease_id)
                self._lease_id = None
                self._lease_deadline = 0.0

    # ------------------------------------------------------------------------------------------- writes

    def _txn(self, what: str, compare: Callable[[Any], list], success: Callable[[Any], list],
             lease_id: int | None = None) -> bool:
        def run(c: Any) -> bool:
            ok, _ = c.transaction(compare=compare(c), success=success(c), failure=[])
            return bool(ok)

        try:
            return self._call(what, run)
        except _LeaseGone:
            if lease_id is not None:
                self._lease_gone(lease_id)
            return False

    def touch_member(self, name: str, data: Mapping[str, Any]) -> bool:
        """Write members/<name> = compact JSON, attached to our lease. False when we hold no live lease.

        Raises:
            DcsUnavailable, DcsError.
        """
        lease_id = self._live_lease()
        if lease_id is None:
            return False
        full = self._key(keys.MEMBERS + name)
        value = json.dumps(dict(data), separators=(",", ":"))
        try:
            self._call("put " + full, lambda c: c.put(full, value, lease=lease_id))
        except _LeaseGone:
            self._lease_gone(lease_id)
            return False
        return True

    def acquire_leader(self, name: str) -> bool:
        """Create `leader` = name on our lease if no leader key exists. False: someone holds it, or no lease.

        Raises:
            DcsUnavailable, DcsError.
        """
        lease_id = self._live_lease()
        if lease_id is None:
            return False
        full = self._key(keys.LEADER)
        return self._txn("acquire " + full, lambda c: [c.transactions.create(full) == 0],
                         lambda c: [c.transactions.put(full, name, lease=lease_id)], lease_id)

    def renew_leader(self, name: str) -> bool:
        """Rewrite `leader` = name on our lease if it still says name. False: not ours (any more), or no lease.

        Raises:
            DcsUnavailable, DcsError.
        """
        lease_id = self._live_lease()
        if lease_id is None:
            return False
        full = self._key(keys.LEADER)
        return self._txn("renew " + full, lambda c: [c.transactions.value(full) == name],
                         lambda c: [c.transactions.put(full, name, lease=lease_id)], lease_id)

    def release_leader(self, name: str) -> bool:
        """Delete `leader` if it says name. False: it was not ours.

        Raises:
            DcsUnavailable, DcsError.
        """
        full = self._key(keys.LEADER)
        return self._txn("release " + full, lambda c: [c.transactions.value(full) == name],
                         lambda c: [c.transactions.delete(full)])

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False,
            use_lease: bool = False) -> bool:
        """Write key (relative to the prefix). `mod_revision`: only if unchanged since; `create`: only if absent.

        `use_lease` attaches the key to our lease (False when we hold no live lease). Returns False when the compare
        failed.

        Raises:
            DcsUnavailable, DcsError.
        """
        full = self._key(key)
        lease_id: int | None = None
        if use_lease:
            lease_id = self._live_lease()
            if lease_id is None:
                return False
        compare: list[Callable[[Any], Any]] = []
        if create:
            compare.append(lambda c: c.transactions.create(full) == 0)
        if mod_revision is not None:
            compare.append(lambda c: c.transactions.mod(full) == int(mod_revision))
        if not compare:
            try:
                self._call("put " + full, lambda c: c.put(full, value, lease=lease_id))
            except _LeaseGone:
                if lease_id is not None:
                    self._lease_gone(lease_id)
                return False
            return True
        return self._txn("put " + full, lambda c: [f(c) for f in compare],
                         lambda c: [c.transactions.put(full, value, lease=lease_id)], lease_id)

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        """Delete key (relative to the prefix), only if unchanged since `mod_revision` when given.

        Returns False when the compare failed or the key did not exist.

        Raises:
            DcsUnavailable, DcsError.
        """
        full = self._key(key)
        if mod_revision is None:
            return bool(self._call("delete " + full, lambda c: c.delete(full)))
        return self._txn("delete " + full, lambda c: [c.transactions.mod(full) == int(mod_revision)],
                         lambda c: [c.transactions.delete(full)])

    def initialize(self, sysid: str = "") -> bool:
        """Create `initialize` = sysid if absent: the winner bootstraps. Set the sysid later with
        `put(keys.INITIALIZE, sysid, mod_revision=...)`.

        Raises:
            DcsUnavailable, DcsError.
        """
        return self.put(keys.INITIALIZE, sysid, create=True)

    # ------------------------------------------------------------------------------------------- watch

    def watch(self, callback: Callable[[], None]) -> None:
        """Call callback() (no arguments) after every change under the prefix, including lease-expiry deletes.

        The watch runs on its own daemon thread, re-arms itself after stream errors (etcd restart, failover to
        another endpoint) from the last seen revision + 1, and calls callback() once after re-arming when events
        may have been lost (compaction). Callbacks must be cheap (e.g. set an Event). Calling watch() again adds
        another callback to the same stream.
        """
        self._watch_callbacks.append(callback)
        if self._watch_thread is None:
            self._watch_thread = threading.Thread(target=self._watch_loop, name=f"etcd-watch-{self.scope}",
                                                  daemon=True)
            self._watch_thread.start()

    def set_watch_filter(self, relevant: Callable[[bool, str, str], bool] | None) -> None:
        """Only notify for events where relevant(is_delete, key relative to prefix, value) is true.

        The agent uses it to ignore its own writes (member key, leader renewals, status), which would otherwise
        wake its loop right after every iteration.
        """
        self._watch_filter = relevant

    def _relevant(self, events: Any) -> bool:
        relevant = self._watch_filter
        if relevant is None:
            return True
        for ev in events:
            key = ev.kv.key.decode("utf-8", "replace")
            if key.startswith(self.prefix):
                key = key[len(self.prefix):]
            is_delete = ev.type == _EVENT_DELETE
            try:
                if relevant(is_delete, key, ev.kv.value.decode("utf-8", "replace")):
                    return True
            except Exception:  # noqa: BLE001 - a broken filter must not hide events
                return True
        return False

    def _notify(self) -> None:
        for cb in list(self._watch_callbacks):
            try:
                cb()
            except Exception:  # noqa: BLE001 - a broken callback must not kill the watch
                log.exception("watch callback failed")

    def _watch_loop(self) -> None:
        last_seen: int | None = None  # revision up to which we have delivered everything
        attempt = 0
        outage_logged = False
        while not self._watch_stop.is_set():
            try:
                client = self._get_client()
            except DcsError as exc:
                if not outage_logged:
                    log.warning("etcd watch: %s", exc)
                    outage_logged = True
                self._watch_stop.wait(0.5)
                continue
            endpoints = list(client.endpoints.values())
            endpoint = endpoints[attempt % len(endpoints)]
            attempt += 1
            done = threading.Event()
            create = etcdrpc.WatchCreateRequest(
                key=self.prefix.encode(), range_end=keys.prefix_range_end(self.prefix.encode()),
                start_revision=(last_seen + 1) if last_seen is not None else 0)

            def requests(req: Any = etcdrpc.WatchRequest(create_request=create), done: threading.Event = done) -> Any:
                yield req
                done.wait()  # keep the request stream open until the response stream ends

            error: str | None = None
            try:
                stub = etcdrpc.WatchStub(endpoint.channel)
                call = stub.Watch(requests(), credentials=client.call_credentials, metadata=client.metadata)
                self._watch_call = call
                if self._watch_stop.is_set():
                    call.cancel()
                for rs in call:
                    if rs.created:
                        if last_seen is not None and rs.header.revision < last_seen:
                            # A different (rebuilt/restored) etcd: our start_revision lies in its future, so this
                            # watch would stay silent. Start over at its current revision.
                            last_seen = rs.header.revision
                            self._notify()
                            error = "etcd revision went backwards"
                            break
                        if last_seen is None:
                            last_seen = rs.header.revision
                        if outage_logged:
                            log.info("etcd watch on %s re-established at revision %s", endpoint.netloc,
                                     last_seen + 1)
                            outage_logged = False
                        attempt = 0
                    if rs.compact_revision:
                        # Events were lost: restart at the compaction point and make the consumer re-read.
                        last_seen = rs.compact_revision - 1
                        self._notify()
                        error = f"revision compacted at {rs.compact_revision}"
                        break
                    if rs.canceled:
                        error = rs.cancel_reason or "watch canceled by etcd"
                        break
                    if rs.events:
                        last_seen = max(last_seen or 0, max(ev.kv.mod_revision for ev in rs.events))
                        if self._relevant(rs.events):
                            self._notify()
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.CANCELLED and self._watch_stop.is_set():
                    break
                details = exc.details() or ""
                error = f"{code.name}: {details}" if details else code.name
                if _is_auth_token_error(details):
                    self._rebuild(client)
            except ValueError as exc:  # closed channel after a client rebuild
                error = str(exc)
            finally:
                done.set()
                self._watch_call = None
            if self._watch_stop.is_set():
                break
            if error is None:
                error = "stream ended"
            if not outage_logged:
                log.warning("etcd watch on %s broke (%s); re-arming", endpoint.netloc, error)
                outage_logged = True
            # Try the next endpoint right away, then back off a little on each full round.
            if attempt % len(endpoints) == 0:
                self._watch_stop.wait(0.3)

    # ------------------------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Stop the watch and close the client's channels. Does not touch the lease or any key."""
        self._watch_stop.set()
        call = self._watch_call
        if call is not None:
            try:
                call.cancel()
            except Exception:  # noqa: BLE001
                pass
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        with self._client_lock:
            self._closed = True
            client, self._client = self._client, None
            retired, self._retired = self._retired, []
        for c in [client] + [c for c, _ in retired]:
            if c is not None:
                _close_quietly(c)


def _kv(kv: Any) -> codec.KeyValue:
    return codec.KeyValue(
        key=kv.key.decode("utf-8", "replace"),
        value=kv.value.decode("utf-8", "replace"),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease) or None,
        create_revision=int(kv.create_revision),
    )


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass
