"""The agent's entries in the audit trail: failover/promotion, demotion on etcd loss, rewind, re-clone, pause seen.

`record(dcs, member, event, result, **args)` is one line at each of those points in the agent. It never blocks the HA loop
and never raises: entries go to a small queue that one background thread writes to etcd, retrying while etcd is out
of reach (a demotion on etcd loss is recorded once etcd answers again). The queue holds at most QUEUE entries;
beyond that the oldest are dropped (and counted in the log). The CLI trims the trail to ctl.dcs.audit.KEEP entries.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from ctl.dcs import audit as layout

log = logging.getLogger(__name__)
QUEUE = 100
RETRY = 2.0  # seconds between attempts while etcd does not answer


class _Writer:
    def __init__(self, dcs: Any) -> None:
        self.dcs = dcs
        self.pending: collections.deque[tuple[str, str]] = collections.deque(maxlen=QUEUE)
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.thread.start()

    def add(self, key: str, value: str) -> None:
        if len(self.pending) == QUEUE:
            log.warning("audit queue full: dropping the oldest unwritten entry")
        self.pending.append((key, value))
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.pending:
                key, value = self.pending[0]
                try:
                    self.dcs.put(key, value)
                except Exception as exc:  # noqa: BLE001 - etcd out of reach: keep the entry, try again later
                    log.debug("audit entry not written yet: %s", exc)
                    self.wake.wait(RETRY)
                    self.wake.clear()
                    continue
                self.pending.popleft()


_writers: dict[int, _Writer] = {}
_lock = threading.Lock()


def record(dcs: Any, member: str, event: str, result: str = "", **args: Any) -> None:
    """Queue one audit entry for an automatic event of agent `member` (`event`: e.g. promote, demote, rewind).

    `dcs`: the agent's etcd client (keys relative to the cluster prefix)."""
    try:
        user, host = layout.who()
        entry = layout.AuditEntry(time=layout.now_iso(), command=event, user=user, host=host, source="agent",
                                  args=layout.redact(args), result=layout.redact(result), member=member)
        with _lock:
            writer = _writers.get(id(dcs))
            if writer is None:
                writer = _writers[id(dcs)] = _Writer(dcs)
        writer.add(layout.PREFIX + layout.new_id(), layout.encode(entry))
    except Exception:  # noqa: BLE001 - the audit trail must never break the HA loop
        log.exception("cannot queue an audit entry for %s", event)


_paused: dict[int, bool] = {}


def pause_seen(dcs: Any, member: str, cluster: Any) -> None:
    """Record a change of the cluster's pause state, as this agent first sees it (one entry per transition)."""
    if cluster is None:
        return
    now, before = bool(cluster.is_paused), _paused.get(id(dcs))
    _paused[id(dcs)] = now
    if before is not None and now != before:
        record(dcs, member, "pause seen" if now else "resume seen", "maintenance mode " + ("on" if now else "off"))
