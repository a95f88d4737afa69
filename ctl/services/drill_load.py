"""The drill's client load: N writer threads INSERTing client-chosen ids through a multi-host libpq string with
`target_session_attrs=read-write` (what an application does), and the figures a stopwatch would give.

Each writer keeps the acknowledgement time of every id it inserted; `longest_gap()` is the longest stretch with no
acknowledged write across all writers. An id counts as acknowledged only when its COMMIT returned without an error
and without a WARNING: PostgreSQL turns a cancelled synchronous-replication wait into a local commit with a WARNING,
which is not durable. The integration tests' writers (tests/support/writers.py) are these. psycopg 3 is imported
only when a drill runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ctl.model import Member


def multi_host_dsn(members: Sequence[Member], user: str | None, password: str | None, dbname: str = "postgres",
                   connect_timeout: int = 2) -> dict[str, Any]:
    """psycopg connect kwargs for every member at once; libpq picks the one that accepts writes."""
    hosts = [m for m in members if m.host]
    kwargs: dict[str, Any] = {"host": ",".join(m.host or "" for m in hosts),
                              "port": ",".join(str(m.port) for m in hosts), "dbname": dbname,
                              "target_session_attrs": "read-write", "connect_timeout": connect_timeout,
                              "application_name": "hactl drill", "autocommit": True}
    if user:
        kwargs["user"] = user
    if password:
        kwargs["password"] = password
    return kwargs


def longest_gap(acks: Sequence[float], start: float, end: float) -> float:
    """The longest time within [start, end] with no acknowledgement (monotonic seconds)."""
    points = [start, *sorted(a for a in acks if start <= a <= end), end]
    return max((b - a for a, b in zip(points, points[1:])), default=0.0)


@dataclass
class Writers:
    """N threads inserting `(id, writer)` rows into `table` until stopped.

    `conninfo` is psycopg.connect() keyword arguments (with autocommit). Writer n's ids are
    `id_base + (n + 1) * 10**9 + 1, 2, ...`, so runs with different `id_base` can share a table.
    """

    conninfo: dict[str, Any]
    table: str
    count: int = 4
    pause: float = 0.01  # between inserts of one writer
    id_base: int = 0
    acked: dict[int, float] = field(default_factory=dict)  # id -> monotonic ack time
    errors: int = 0
    warned: int = 0  # commits that returned a WARNING (not acknowledged)
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(self.count):
            t = threading.Thread(target=self._run, args=(n,), name=f"drill-writer-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def ack_times(self) -> list[float]:
        with self._lock:
            return list(self.acked.values())

    def acked_ids(self) -> list[int]:
        with self._lock:
            return list(self.acked)

    def _run(self, n: int) -> None:
        import psycopg

        seq = 0
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(**self.conninfo)
                    notices: list[str] = []
                    conn.add_notice_handler(lambda d, sink=notices: sink.append(d.severity_nonlocalized or ""))
                seq += 1
                row_id = self.id_base + (n + 1) * 1_000_000_000 + seq
                notices.clear()
                conn.execute(f"INSERT INTO {self.table} (id, writer) VALUES (%s, %s)", (row_id, n))  # type: ignore
                now = time.monotonic()
                with self._lock:
                    if "WARNING" in notices:  # "canceling wait for synchronous replication": committed locally only
                        self.warned += 1
                    else:
                        self.acked[row_id] = now
            except Exception as exc:  # noqa: BLE001 - a failover breaks connections: reconnect and go on
                with self._lock:
                    self.errors += 1
                    self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                self._stop.wait(0.05)
                continue
            self._stop.wait(self.pause)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
