"""Concurrent writers that remember which rows the cluster acknowledged (durability tests and bench/durability.py).

Each writer has its own connection through one multi-host libpq string with `target_session_attrs=read-write`
(what an application of an HA cluster uses), INSERTs client-chosen ids back to back in autocommit, and records an
id as acknowledged only when COMMIT returned without error and without a WARNING (PostgreSQL turns a cancelled
synchronous wait into a commit with a WARNING: not durable, so not counted as acknowledged).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.support.agents import SUPERUSER_PASSWORD, AgentCluster

TABLE = "acked_writes"


def conninfo(cluster: AgentCluster) -> str:
    hosts = ",".join("127.0.0.1" for _ in cluster.nodes)
    ports = ",".join(str(n.pg_port) for n in cluster.nodes.values())
    return (f"host={hosts} port={ports} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres "
            "target_session_attrs=read-write connect_timeout=2")


def create_table(cluster: AgentCluster, leader: str) -> None:
    cluster.sql(leader, f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, writer int)")


@dataclass
class _Writer:
    index: int
    acked: list[int] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    warned: int = 0
    errors: int = 0
    last_error: str = ""


class Writers:
    """`n` writer threads; `acked()` is every id a COMMIT acknowledged, `gaps()` the pauses between acks."""

    def __init__(self, cluster: AgentCluster, n: int = 4, id_base: int = 0) -> None:
        self.dsn = conninfo(cluster)
        self._stop = threading.Event()
        self._writers = [_Writer(i) for i in range(n)]
        self._threads = [threading.Thread(target=self._run, args=(w, id_base), daemon=True) for w in self._writers]

    def __enter__(self) -> "Writers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, w: _Writer, id_base: int) -> None:
        import psycopg

        seq = 0
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                    notices: list[str] = []
                    conn.add_notice_handler(lambda d, sink=notices: sink.append(d.severity_nonlocalized or ""))
                seq += 1
                rid = id_base + w.index * 1_000_000_000 + seq
                notices.clear()
                conn.execute(f"INSERT INTO {TABLE} (id, writer) VALUES (%s, %s)", (rid, w.index))
                if any(s == "WARNING" for s in notices):
                    w.warned += 1  # "canceling wait for synchronous replication": committed locally only
                    continue
                w.acked.append(rid)
                w.ack_times.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the primary went away: the outcome of this id is unknown
                w.errors += 1
                w.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def acked(self) -> set[int]:
        return {rid for w in self._writers for rid in w.acked}

    def errors(self) -> str:
        return "; ".join(f"writer {w.index}: {w.errors} errors, last: {w.last_error}" for w in self._writers)

    def count(self) -> int:
        return sum(len(w.acked) for w in self._writers)

    def ack_times(self) -> list[float]:
        return sorted(t for w in self._writers for t in w.ack_times)

    def gap(self, after: float) -> float | None:
        """The longest time without any acknowledged write from 1 s before `after` (a fault) to the last ack."""
        times = [t for t in self.ack_times() if t >= after - 1.0]
        if len(times) < 2 or times[-1] <= after:
            return None
        return max(b - a for a, b in zip(times, times[1:]))


def missing(cluster: AgentCluster, node: str, ids: set[int]) -> set[int]:
    """The ids of `ids` that `node` does not have."""
    if not ids:
        return set()
    with cluster.connect(node, timeout=5) as conn:
        conn.execute("CREATE TEMP TABLE want (id bigint)")
        with conn.cursor().copy("COPY want (id) FROM STDIN") as copy:
            for rid in ids:
                copy.write_row((rid,))
        rows = conn.execute(f"SELECT w.id FROM want w LEFT JOIN {TABLE} a USING (id) WHERE a.id IS NULL").fetchall()
    return {r[0] for r in rows}
