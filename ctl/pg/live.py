"""Request-time reads of the local server for the REST API: positions, role and recovery state, one round trip.

The REST API answers `GET /patroni`, the health checks and the switchover checks from a read made when the request
arrives (Patroni's `get_postgresql_status` does the same over its own `restapi` connection). This module is that
read: a dedicated connection (kept open, reopened once when it broke, e.g. after a restart) with a statement_timeout,
used by one thread at a time (ctl.agent.live serializes the callers). It never touches the HA loop's connections or
locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psycopg
from psycopg.rows import dict_row

from ctl.errors import PgCommandError
from ctl.pg.probe import PgState, state_from_row, status_sql

log = logging.getLogger(__name__)

# Lighter than PROBE_SQL (no pg_settings/pg_file_settings, no control file's system identifier): what the REST
# answers need. A primary's position is its flush LSN, as Patroni 4 reports it: replicas can receive only flushed
# WAL, so it is the fair reference for their lag. The WAL receiver adds latest_end_lsn (the upstream's WAL end as
# its walsender last reported it); replication rows carry Patroni's six keys only.
LIVE_SQL = status_sql(
    position="pg_current_wal_flush_lsn",
    receiver=""",
            (latest_end_lsn - '0/0'::pg_lsn)::bigint AS latest_end_lsn""",
)


@dataclass(frozen=True)
class LiveRead:
    """One request-time read. `latest_end_lsn`: the upstream's WAL end as its walsender last reported it."""

    state: PgState
    latest_end_lsn: int | None = None


def read_from_row(row: Mapping[str, Any]) -> LiveRead:
    """The LIVE_SQL row (a column-name mapping) as a LiveRead."""
    receiver = row.get("wal_receiver") or {}
    end = receiver.get("latest_end_lsn")
    return LiveRead(state_from_row(row), int(end) if end is not None else None)


class LiveReader:
    """A dedicated connection for request-time reads; not thread-safe (one caller at a time)."""

    def __init__(self, conninfo: Callable[[], Mapping[str, Any]], *, statement_timeout: float = 1.0,
                 connect: Callable[..., Any] = psycopg.connect) -> None:
        """`conninfo()` gives psycopg.connect() keyword arguments (ctl.pg.postgres.Postgres.conninfo)."""
        self._conninfo = conninfo
        self._timeout_ms = max(1, int(statement_timeout * 1000))
        self._connect = connect
        self._conn: Any = None

    def read(self) -> LiveRead:
        """One round trip on the kept connection; a broken one is replaced once.

        Raises:
            PgCommandError: the server cannot answer (down, starting, hung past the statement timeout).
        """
        reused = self._conn is not None
        try:
            return self._read_once()
        except psycopg.Error as exc:
            self.close()
            if not reused or isinstance(exc, psycopg.errors.QueryCanceled):
                raise PgCommandError(f"live read failed: {_first_line(exc)}") from None
        try:  # the kept connection broke (a restart, a terminated backend): one fresh attempt
            return self._read_once()
        except psycopg.Error as exc:
            self.close()
            raise PgCommandError(f"live read failed: {_first_line(exc)}") from None

    def _read_once(self) -> LiveRead:
        if self._conn is None:
            params = dict(self._conninfo())
            params["application_name"] = "hactl rest"
            self._conn = self._connect(**params, autocommit=True, row_factory=dict_row,
                                       options=f"-c statement_timeout={self._timeout_ms}")
        row = self._conn.execute(LIVE_SQL).fetchone()
        return read_from_row(row)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
