"""SQL access to the local server as the superuser, over the unix socket: the probe, statements, users, slots.

A mixin of ctl.pg.postgres.Postgres (it needs `conninfo()`, `is_running()` and `name`); psycopg errors become
PgCommandError here.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

import psycopg
from psycopg.rows import dict_row

from ctl.config import PgUser
from ctl.errors import PgCommandError
from ctl.pg import admin
from ctl.pg.probe import PROBE_SQL, PgState, state_from_row

log = logging.getLogger("ctl.pg.postgres")


class SqlAccess:
    name: str

    def conninfo(self, **kwargs: Any) -> dict[str, Any]:  # pragma: no cover - provided by Postgres
        raise NotImplementedError

    def is_running(self) -> bool:  # pragma: no cover - provided by Postgres
        raise NotImplementedError

    def probe(self) -> PgState:
        """One SQL round trip describing the server; never raises (running=False, or error=<why>)."""
        if not self.is_running():
            return PgState(running=False)
        try:
            with psycopg.connect(**self.conninfo(connect_timeout=2), autocommit=True, row_factory=dict_row,
                                 options="-c statement_timeout=5000") as conn:
                row = conn.execute(PROBE_SQL).fetchone()
            return state_from_row(row)
        except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
            return PgState(running=self.is_running(), error=first_line(exc))

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
        """Run one statement as the superuser (autocommit); rows, or [] for statements without a result.

        Raises:
            PgCommandError: connection or statement failed.
        """
        return self._query(sql, params)

    def _query(self, query: Any, params: Any = None, *, statement_timeout: float | None = None) -> list[tuple]:
        kwargs: dict[str, Any] = {}
        if statement_timeout:
            kwargs["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
        try:
            with psycopg.connect(**self.conninfo(), autocommit=True, **kwargs) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise PgCommandError(f"SQL failed on {self.name}: {first_line(exc)}") from None

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection]:
        """An autocommit superuser connection; psycopg errors become PgCommandError("<what> failed: ...")."""
        try:
            with psycopg.connect(**self.conninfo(), autocommit=True) as conn:
                yield conn
        except psycopg.Error as exc:
            raise PgCommandError(f"{what} failed on {self.name}: {first_line(exc)}") from None

    def create_users(self, superuser: PgUser, replication: PgUser, rewind: PgUser | None = None) -> None:
        """Set the superuser's password; create/alter the replication role (REPLICATION LOGIN) and the rewind
        role with the function grants pg_rewind needs (and pg_checkpoint). Passwords stay out of the server log.

        Raises:
            PgCommandError: a statement failed.
        """
        with self._connection("creating users") as conn:
            admin.create_users(conn, superuser, replication, rewind)
        log.info("users ready: %s", ", ".join(u.username for u in (superuser, replication, rewind) if u))

    def replication_slots(self) -> dict[str, dict[str, Any]]:
        """Physical slots: {name: {"active": bool, "restart_lsn": int | None}}.

        Raises:
            PgCommandError: the query failed.
        """
        with self._connection("listing slots") as conn:
            return admin.replication_slots(conn)

    def ensure_slots(self, names: Iterable[str]) -> list[str]:
        """Create the missing physical slots (names sanitized with conf.slot_name, WAL reserved at once).
        Returns the names created.

        Raises:
            PgCommandError: a query failed.
        """
        with self._connection("creating slots") as conn:
            return admin.ensure_slots(conn, names)

    def drop_slots_except(self, keep: Iterable[str]) -> list[str]:
        """Drop the physical slots not in `keep` (sanitized); active ones are kept. Returns the names dropped.

        Raises:
            PgCommandError: a query failed.
        """
        with self._connection("dropping slots") as conn:
            return admin.drop_slots_except(conn, keep)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
