"""The agent's etcd v3 DCS: leases, leader txns, compare-and-set writes and a self-healing prefix watch.

Only this module and its two parts, ctl.dcs.etcd3_client (client construction, authentication, endpoint choice,
error mapping) and ctl.dcs.etcd3_watch (the prefix watch), import `etcd3` (cslab-etcd3) or `grpc`; every
client/grpc exception is turned into `DcsUnavailable` (no endpoint answered in time) or `DcsError` (etcd answered
with an error) there. Messages name the endpoints, never the password. See /work/shared/reference/etcd-client.md
for the client bugs worked around.

Public API (`Etcd3Dcs`); every key argument is relative to `prefix` (`/<namespace>/<scope>/`):

    Etcd3Dcs(settings, namespace, scope, *, timeout=2.0)
    .prefix: str, .scope: str, .lease_id: int | None, .lease_ttl: int | None
    .get_cluster() -> Cluster                         one range read of the prefix -> codec.parse_cluster
    .last_failure() -> float | None                   when this thread's last call found no endpoint (None: answered)
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

Endpoints and timeouts: `timeout` is the per-RPC deadline. Endpoints are tried in a fixed order, never at
random: construction and authentication try each in turn; a call goes to the endpoint that answered last and,
when it fails, to the others in configured order, each once, giving up after a majority of them timed out
(ctl.dcs.etcd3_client). So one method takes at most 1 * timeout with one endpoint (hung etcd: measured 2.00 s
for timeout=2) and at most majority(n) * timeout with n (2 * timeout with 3 members): a frozen member costs one
timeout once, then the agent stays on a live one. The watch stream has no deadline once confirmed; a member that
does not confirm it within `timeout`, or that a unary call found dead, loses it to the next one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping

from ctl.config import EtcdSettings
from ctl.dcs import codec, keys
from ctl.dcs.etcd3_client import EtcdConnection, LeaseGone, majority
from ctl.dcs.etcd3_watch import PrefixWatch
from ctl.errors import DcsError
from ctl.model import Cluster

__all__ = ["Etcd3Dcs", "majority"]

log = logging.getLogger(__name__)


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
        self._conn = EtcdConnection(settings, self.timeout)
        self._watch = PrefixWatch(self._conn, self.prefix, scope)
        self._lease_lock = threading.Lock()
        self._lease_id: int | None = None
        self._lease_ttl: int | None = None
        self._lease_deadline = 0.0  # time.monotonic() after which the lease is presumed expired

    def last_failure(self) -> float | None:
        """When the calling thread's last etcd call found no endpoint (time.monotonic()), or None if it got an
        answer. The HA loop uses it to notice that etcd went away in the middle of an iteration."""
        return self._conn.last_failure()

    @property
    def rebuilds(self) -> int:
        """How often an expired auth token made us rebuild the client (for tests/diagnostics)."""
        return self._conn.rebuilds

    def _key(self, key: str) -> str:
        return self.prefix + key.lstrip("/")

    # ------------------------------------------------------------------------------------------- reads

    def get_cluster(self) -> Cluster:
        """One consistent range read of the whole prefix.

        Raises:
            DcsUnavailable: no endpoint answered.
            DcsError: etcd refused the read.
        """
        resp = self._conn.call("get " + self.prefix, lambda c: c.get_prefix_response(self.prefix))
        kvs = [_kv(kv) for kv in resp.kvs]
        return codec.parse_cluster(self.scope, self.prefix, kvs, resp.header.revision)

    def get(self, key: str) -> codec.KeyValue | None:
        """One key relative to the prefix, or None.

        Raises:
            DcsUnavailable, DcsError.
        """
        full = self._key(key)
        resp = self._conn.call("get " + full, lambda c: c.get_response(full))
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
            lease = self._conn.call("grant lease", lambda c: c.lease(int(ttl)))
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
                responses = self._conn.call("refresh lease", lambda c: list(c.refresh_lease(lease_id)))
            except LeaseGone:
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
            self._conn.call("revoke lease", lambda c: c.revoke_lease(lease_id))
        except (DcsError, LeaseGone) as exc:
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
            return self._conn.call(what, run)
        except LeaseGone:
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
            self._conn.call("put " + full, lambda c: c.put(full, value, lease=lease_id))
        except LeaseGone:
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
                self._conn.call("put " + full, lambda c: c.put(full, value, lease=lease_id))
            except LeaseGone:
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
            return bool(self._conn.call("delete " + full, lambda c: c.delete(full)))
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
        self._watch.add(callback)

    def set_watch_filter(self, relevant: Callable[[bool, str, str], bool] | None) -> None:
        """Only notify for events where relevant(is_delete, key relative to prefix, value) is true.

        The agent uses it to ignore its own writes (member key, leader renewals, status), which would otherwise
        wake its loop right after every iteration.
        """
        self._watch.filter = relevant

    # ------------------------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Stop the watch and close the client's channels. Does not touch the lease or any key."""
        self._watch.stop()
        self._conn.close()


def _kv(kv: Any) -> codec.KeyValue:
    return codec.KeyValue(
        key=kv.key.decode("utf-8", "replace"),
        value=kv.value.decode("utf-8", "replace"),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease) or None,
        create_revision=int(kv.create_revision),
    )
