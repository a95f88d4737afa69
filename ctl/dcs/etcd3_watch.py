"""A self-healing watch of one etcd key prefix, on its own daemon thread (used by ctl.dcs.etcd3.Etcd3Dcs).

python-etcd3's watches are never re-established after an error, and all callbacks of a client share one thread
(etcd-client.md). So the watch is a raw grpc Watch stream that this module re-arms itself: after a stream error
(etcd restart, member lost) from the last seen revision + 1, on the endpoint the unary calls use last, then on the
others in turn. A member that does not confirm the watch within the client timeout (frozen, SIGSTOPped) is left
for the next one; a stream on a member that the unary calls just found dead is cancelled and re-armed elsewhere at
once, rather than after grpc's keepalive timeout (15 s).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import etcd3.etcdrpc as etcdrpc
import grpc
from etcd3.etcdrpc import kv_pb2 as _kv_pb2

from ctl.dcs import keys
from ctl.dcs.etcd3_client import EtcdConnection, is_auth_token_error
from ctl.errors import DcsError

log = logging.getLogger("ctl.dcs.etcd3")

_EVENT_DELETE = _kv_pb2.Event.DELETE


class PrefixWatch:
    """Calls every callback after each relevant change under `prefix`; see Etcd3Dcs.watch()."""

    def __init__(self, conn: EtcdConnection, prefix: str, scope: str) -> None:
        self._conn = conn
        self._prefix = prefix
        self._scope = scope
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._call: Any = None
        self._endpoint: str | None = None
        self.callbacks: list[Callable[[], None]] = []
        self.filter: Callable[[bool, str, str], bool] | None = None
        conn.on_endpoint_failed = self._endpoint_failed

    def add(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"etcd-watch-{self._scope}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _cancel(self) -> None:
        call = self._call
        if call is not None:
            try:
                call.cancel()
            except Exception:  # noqa: BLE001
                pass

    def _endpoint_failed(self, label: str) -> None:
        """A unary call found `label` dead or frozen: if our stream is there, move it."""
        if label == self._endpoint:
            self._cancel()

    def _relevant(self, events: Any) -> bool:
        relevant = self.filter
        if relevant is None:
            return True
        for ev in events:
            key = ev.kv.key.decode("utf-8", "replace")
            if key.startswith(self._prefix):
                key = key[len(self._prefix):]
            is_delete = ev.type == _EVENT_DELETE
            try:
                if relevant(is_delete, key, ev.kv.value.decode("utf-8", "replace")):
                    return True
            except Exception:  # noqa: BLE001 - a broken filter must not hide events
                return True
        return False

    def _notify(self) -> None:
        for cb in list(self.callbacks):
            try:
                cb()
            except Exception:  # noqa: BLE001 - a broken callback must not kill the watch
                log.exception("watch callback failed")

    def _loop(self) -> None:
        last_seen: int | None = None  # revision up to which we have delivered everything
        tried: list[str] = []  # endpoints tried since the stream was last confirmed (that one included)
        outage_logged = False
        while not self._stop.is_set():
            try:
                client = self._conn.client()
            except DcsError as exc:
                if not outage_logged:
                    log.warning("etcd watch: %s", exc)
                    outage_logged = True
                self._stop.wait(0.5)
                continue
            labels = list(client.endpoints)
            first = self._conn.current_label(client)
            order = [first] + [label for label in labels if label != first] if first in labels else labels
            untried = [label for label in order if label not in tried]
            if not untried:  # every endpoint failed: back off a little, then start over
                tried.clear()
                self._stop.wait(0.3)
                continue
            endpoint = client.endpoints[untried[0]]
            tried.append(untried[0])
            self._endpoint = endpoint.netloc
            done = threading.Event()
            created = threading.Event()
            create = etcdrpc.WatchCreateRequest(
                key=self._prefix.encode(), range_end=keys.prefix_range_end(self._prefix.encode()),
                start_revision=(last_seen + 1) if last_seen is not None else 0)

            def requests(req: Any = etcdrpc.WatchRequest(create_request=create), done: threading.Event = done) -> Any:
                yield req
                done.wait()  # keep the request stream open until the response stream ends

            error: str | None = None
            timer: threading.Timer | None = None
            try:
                stub = etcdrpc.WatchStub(endpoint.channel)
                call = stub.Watch(requests(), credentials=client.call_credentials, metadata=client.metadata)
                self._call = call
                # A frozen member accepts the stream but never confirms it: give up on it after one timeout.
                timer = threading.Timer(self._conn.timeout, lambda: None if created.is_set() else call.cancel())
                timer.daemon = True
                timer.start()
                if self._stop.is_set():
                    call.cancel()
                for rs in call:
                    if rs.created:
                        created.set()
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
                        # when this stream breaks, the other endpoints come first (this one is likely down)
                        tried[:] = [endpoint.netloc]
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
                if code == grpc.StatusCode.CANCELLED and self._stop.is_set():
                    break
                details = exc.details() or ""
                error = f"{code.name}: {details}" if details else code.name
                if code == grpc.StatusCode.CANCELLED and not created.is_set():
                    error = f"no answer within {self._conn.timeout:g}s"
                if is_auth_token_error(details):
                    self._conn.rebuild(client)
            except ValueError as exc:  # closed channel after a client rebuild
                error = str(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                done.set()
                self._call = None
                self._endpoint = None
            if self._stop.is_set():
                break
            if error is None:
                error = "stream ended"
            if not outage_logged:
                log.warning("etcd watch on %s broke (%s); re-arming", endpoint.netloc, error)
                outage_logged = True
