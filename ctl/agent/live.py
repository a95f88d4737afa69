"""The node's status as the REST API serves it: the HA loop's observation, with PostgreSQL read at request time.

The loop observes PostgreSQL once per loop_wait; an answer built from that alone can be loop_wait old, and two such
caches of different ages made switchovers look 16 MB behind after a WAL segment switch (issue 10). So `GET /patroni`,
`/cluster` (our entry), the health checks and the switchover checks take positions, role and recovery state from a
read made after the request arrived (Patroni reads at request time as well), and the rest (state, tags, pause, the
DCS view) from the loop's observation. When PostgreSQL cannot answer within LIVE_TIMEOUT the answer is the loop's
observation, marked with `observed_age_s` (seconds since the loop published it).

Concurrency (REST requests run in threads; a load balancer may poll every 100 ms):
- One worker thread does the reads, on one dedicated connection: at most one connection and one query at a time,
  however many requests come in. Nothing here takes a lock the HA loop uses, so a slow read never holds up the loop.
- Requests are coalesced, not cached: a request waits for a read that *started after it arrived* (a read already under
  way may predate a write the client just made), so one read answers every request that came in while the previous
  one ran. A burst of requests costs two reads at most; an answer is never older than its request.
- A request waits at most LIVE_TIMEOUT. When a read has been running longer than that (a hung server), requests fall
  back at once instead of queueing behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ctl.model import NodeStatus

log = logging.getLogger(__name__)

LIVE_TIMEOUT = 0.8  # seconds; under the 1 s that peers and patronictl allow for a whole GET /patroni
QUERYABLE_STATES = ("running", "restarting", "starting")  # as Patroni: no SQL in other states


class LiveStatus:
    """`status()`: NodeStatus with live PostgreSQL positions, or the loop's with `observed_age_s`."""

    def __init__(self, observed: Callable[[], NodeStatus], read: Callable[[], Any], *,
                 timeout: float = LIVE_TIMEOUT, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """`observed()`: the loop's NodeStatus. `read()`: a ctl.pg.live.LiveRead (raises when PostgreSQL cannot
        answer); only the worker thread calls it."""
        self._observed = observed
        self._read = read
        self.timeout = timeout
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition()
        self._asked = 0  # requests so far (a sequence number)
        self._served = 0  # the `_asked` value when the last finished read started
        self._result: Any = None  # that read's LiveRead, or None when it failed
        self._running_since: float | None = None
        self._worker: threading.Thread | None = None
        self._stopped = False
        self._created = wall()

    def status(self) -> NodeStatus:
        st = self._observed()
        if st.state not in QUERYABLE_STATES:
            return st  # nothing to read: the state (creating replica, stopped, ...) is the answer
        live = self.fresh_read()
        if live is None:
            last = st.last_loop_time if st.last_loop_time is not None else self._created
            return replace(st, observed_age_s=round(max(0.0, self._wall() - last), 3))
        return overlay(st, live)

    def fresh_read(self) -> Any:
        """A LiveRead that started after this call, or None (PostgreSQL did not answer within the timeout)."""
        with self._cond:
            if self._stopped:
                return None
            now = self._clock()
            if self._running_since is not None and now - self._running_since > self.timeout:
                return None  # the read under way hangs: do not queue behind it
            self._asked += 1
            mine = self._asked
            self._ensure_worker()
            self._cond.notify_all()
            deadline = now + self.timeout
            while self._served < mine:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._stopped:
                    return None
                self._cond.wait(remaining)
            return self._result

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="rest-live-read", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._served >= self._asked and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                covers = self._asked
                self._running_since = self._clock()
            try:
                result = self._read()
            except Exception as exc:  # noqa: BLE001 - any failure means "fall back to the observation"
                log.debug("live read of PostgreSQL failed: %s", exc)
                result = None
            with self._cond:
                self._result, self._served, self._running_since = result, covers, None
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop the worker (it finishes a read under way first); later calls answer from the observation."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def overlay(st: NodeStatus, live: Any) -> NodeStatus:
    """The loop's NodeStatus with what a LiveRead says about PostgreSQL now."""
    s = live.state
    replica = bool(s.in_recovery)
    role = st.role
    if role in ("primary", "master", "replica"):  # demoted, standby_leader, uninitialized stay as the loop says
        role = "replica" if replica else "primary"
    return replace(
        st,
        role=role,
        server_version=s.server_version or st.server_version,
        postmaster_start_time=s.postmaster_start_time or st.postmaster_start_time,
        xlog_location=None if replica else s.wal_lsn,
        received_location=s.received_lsn if replica else None,
        replayed_location=s.replayed_lsn if replica else None,
        replayed_timestamp=s.replayed_timestamp,
        wal_replay_paused=bool(s.wal_replay_paused),
        timeline=s.timeline if s.timeline is not None else st.timeline,
        replication_state=("streaming" if s.streaming else "in archive recovery") if replica else None,
        replication=tuple(s.replication),
        latest_end_lsn=live.latest_end_lsn if replica else None,
        observed_age_s=None,
    )
