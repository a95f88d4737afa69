"""ctl.services.drill_load.Writers against a fake psycopg connection (no server): what counts as acknowledged."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import psycopg

from ctl.services.drill_load import Writers


class _FakeConn:
    """Every third INSERT commits with a WARNING (a cancelled synchronous wait); the fifth fails outright."""

    def __init__(self, log: list[tuple[int, int]], lock: threading.Lock) -> None:
        self._handlers: list = []
        self._log, self._lock = log, lock
        self.closed = False

    def add_notice_handler(self, handler) -> None:
        self._handlers.append(handler)

    def execute(self, sql: str, params: tuple[int, int]) -> None:
        assert sql.startswith("INSERT INTO t (id, writer)")
        with self._lock:
            self._log.append(params)
            n = len(self._log)
        if n == 5:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if n % 3 == 0:
            for h in self._handlers:
                h(SimpleNamespace(severity_nonlocalized="WARNING"))

    def close(self) -> None:
        self.closed = True


def test_a_commit_with_a_warning_or_an_error_is_not_acknowledged(monkeypatch) -> None:
    log: list[tuple[int, int]] = []
    lock = threading.Lock()
    monkeypatch.setattr(psycopg, "connect", lambda **kw: _FakeConn(log, lock))
    w = Writers({"autocommit": True}, "t", count=1, pause=0.0, id_base=7 * 10**10)
    w.start()
    deadline = time.monotonic() + 5
    while len(log) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    with lock:
        sent = list(log)
    warned = {rid for i, (rid, _) in enumerate(sent, 1) if i % 3 == 0 and i != 5}
    failed = {sent[4][0]}
    assert w.errors == 1 and "closed the connection" in w.last_error
    assert w.warned == len(warned)
    assert set(w.acked_ids()) == {rid for rid, _ in sent} - warned - failed
    assert all(rid // 10**9 == 71 for rid in w.acked_ids())  # id_base + writer 0's block
    assert len(w.ack_times()) == len(w.acked_ids())
