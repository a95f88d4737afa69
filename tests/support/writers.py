"""Concurrent writers that remember which rows the cluster acknowledged (durability tests and bench/durability.py).

The writers are the drill's (ctl.services.drill_load.Writers): one connection each through one multi-host libpq
string with `target_session_attrs=read-write` (what an application of an HA cluster uses), client-chosen ids INSERTed
back to back in autocommit, an id acknowledged only when COMMIT returned without an error and without a WARNING
(PostgreSQL turns a cancelled synchronous wait into a commit with a WARNING: not durable, so not counted). This module
binds them to a test AgentCluster and adds the tests' checks.
"""

from __future__ import annotations

from ctl.services.drill_load import Writers as _DrillWriters
from tests.support.agents import SUPERUSER_PASSWORD, AgentCluster

TABLE = "acked_writes"


def conninfo(cluster: AgentCluster) -> str:
    hosts = ",".join("127.0.0.1" for _ in cluster.nodes)
    ports = ",".join(str(n.pg_port) for n in cluster.nodes.values())
    return (f"host={hosts} port={ports} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres "
            "target_session_attrs=read-write connect_timeout=2")


def create_table(cluster: AgentCluster, leader: str) -> None:
    cluster.sql(leader, f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, writer int)")


class Writers:
    """`n` writer threads; `acked()` is every id a COMMIT acknowledged, `gap()` the longest pause between acks."""

    def __init__(self, cluster: AgentCluster, n: int = 4, id_base: int = 0) -> None:
        self.dsn = conninfo(cluster)
        self._load = _DrillWriters({"conninfo": self.dsn, "autocommit": True}, TABLE, n, pause=0.0, id_base=id_base)

    def __enter__(self) -> "Writers":
        self._load.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._load.stop()

    def acked(self) -> set[int]:
        return set(self._load.acked_ids())

    def errors(self) -> str:
        load = self._load
        return f"{load.errors} errors, {load.warned} commits with a WARNING, last error: {load.last_error or '-'}"

    def count(self) -> int:
        return len(self._load.ack_times())

    def ack_times(self) -> list[float]:
        return sorted(self._load.ack_times())

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
