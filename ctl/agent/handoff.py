"""The hand-off of a synchronous standby before its PostgreSQL stops or restarts (rules: ctl/ha/handoff.py).

`Handoff.around(stop)` publishes the nosync tag, polls the DCS until the leader released this node (bounded by
2 x loop_wait, as Patroni), runs `stop`, and then drops the tag again. It runs on the thread that stops
PostgreSQL: the task runner's worker for a restart (the HA loop goes on), the main thread at agent shutdown
(after the loop ended). A DCS error or a member key that cannot be written skips the wait: the hand-off is a
courtesy to the leader, never a reason not to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, TypeVar

from ctl.errors import CtlError
from ctl.ha import handoff as rules
from ctl.ha.state import HaSettings
from ctl.model import Cluster

log = logging.getLogger("hactl.agent")

T = TypeVar("T")
POLL = 0.25  # seconds between DCS reads while waiting (Patroni: 2 s)


class Handoff:
    """The effective nosync tag and the wait. Thread-safe: the loop reads `active`, a task or shutdown runs
    `around()`."""

    def __init__(self, name: str, dcs: Any, publish: Callable[[], bool], *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.dcs = dcs
        self.publish = publish  # writes our member key with the effective tags now; False when it could not
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._count = 0

    @property
    def active(self) -> bool:
        return self._count > 0

    def tags(self, configured: Mapping[str, Any]) -> dict[str, Any]:
        """The tags to publish now."""
        return rules.effective_tags(configured, self.active)

    def around(self, stop: Callable[[], T], *, what: str, settings: HaSettings, configured: Mapping[str, Any],
               is_leader: bool, known: Cluster | None, running: bool = True,
               cancelled: Callable[[], bool] = lambda: False, keepalive: Callable[[], Any] | None = None) -> T:
        """Run `stop` (which stops, or restarts, PostgreSQL) once the leader no longer counts on this node as a
        synchronous standby, or after 2 x loop_wait (`known`: the cluster as the loop last read it, before the
        leader could react to this stop: whether we were a synchronous standby); the nosync tag stays on while `stop`
        runs and goes with the next member key written after it (the loop's, which the end of a task wakes; the
        stopped one at shutdown)."""
        if not running or not rules.needed(settings.synchronous_mode, configured, is_leader):
            return stop()
        with self._lock:
            self._count += 1
        try:
            self._wait(what, settings, known is not None and rules.listed(known, self.name), cancelled, keepalive)
            return stop()
        finally:
            with self._lock:
                self._count -= 1  # the next member key written (the loop's, woken by the task's end) drops nosync

    def _wait(self, what: str, settings: HaSettings, was_listed: bool, cancelled: Callable[[], bool],
              keepalive: Callable[[], Any] | None) -> None:
        try:
            written = self.publish()
        except CtlError as exc:
            log.warning("updating member key failed (%s): %s without synchronous standby hand-off", exc, what)
            return
        if not written:
            log.warning("updating member key failed: %s without synchronous standby hand-off", what)
            return
        start = self.clock()
        deadline = start + 2 * settings.loop_wait
        grace = settings.loop_wait + 1.0
        released_at: float | None = None
        logged: str | None = None
        while True:
            try:
                cluster = self.dcs.get_cluster()
            except CtlError as exc:
                log.warning("cannot read the DCS (%s): %s without waiting for the synchronous standby hand-off",
                            exc, what)
                return
            now = self.clock()
            listed = rules.listed(cluster, self.name)
            was_listed = was_listed or listed
            if listed:
                released_at = None
            elif released_at is None:
                released_at = now
            waiting = rules.waiting_for(cluster, self.name, mode=settings.synchronous_mode,
                                        strict=settings.synchronous_mode_strict, was_listed=was_listed,
                                        released_for=now - (released_at if released_at is not None else now),
                                        replacement_grace=grace)
            if waiting is None:
                if was_listed:
                    log.info("released from synchronous standby after %.1fs: %s", now - start, what)
                return
            if now >= deadline:
                log.warning("still waiting for %s after %.0fs: %s anyway", waiting, now - start, what)
                return
            if cancelled():
                return
            if waiting != logged:
                log.info("%s: waiting for %s", what, waiting)
                logged = waiting
            if keepalive is not None:
                keepalive()
            self.sleep(POLL)
