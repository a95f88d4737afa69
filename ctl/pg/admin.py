"""SQL administration on an open superuser connection: roles and physical replication slots.

`Postgres` opens the connection and converts psycopg errors to PgCommandError; these functions only speak SQL.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import psycopg
from psycopg import sql

from ctl.config import PgUser
from ctl.pg.conf import slot_name

log = logging.getLogger(__name__)

# pg_rewind needs these on the source server when it connects as a non-superuser (PostgreSQL docs, pg_rewind).
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


def create_users(conn: psycopg.Connection, superuser: PgUser, replication: PgUser, rewind: PgUser | None) -> None:
    """Superuser password; replication role (REPLICATION LOGIN); rewind role with pg_rewind's grants.

    Statement logging is switched off for the session first, so that no password reaches the server log even
    when a statement fails.
    """
    for setting in ("log_statement = 'none'", "log_min_error_statement = 'panic'", "log_min_duration_statement = -1"):
        conn.execute(f"SET {setting}")

    def upsert(user: PgUser, attrs: str) -> None:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user.username,)).fetchone()
        password = sql.Literal(user.password) if user.password else sql.SQL("NULL")
        conn.execute(sql.SQL("{} ROLE {} WITH {} PASSWORD {}").format(
            sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(user.username), sql.SQL(attrs), password))

    if superuser.password:
        upsert(superuser, "SUPERUSER LOGIN")
    if replication.username != superuser.username:
        upsert(replication, "REPLICATION LOGIN")
    if rewind and rewind.username != superuser.username:
        upsert(rewind, "LOGIN")
        for fn in REWIND_FUNCTIONS:
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(fn),
                                                                              sql.Identifier(rewind.username)))
        if conn.info.server_version >= 150000:  # lets a rewinding node CHECKPOINT this server first
            conn.execute(sql.SQL("GRANT pg_checkpoint TO {}").format(sql.Identifier(rewind.username)))


def replication_slots(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Physical slots: {name: {"active": bool, "restart_lsn": int | None}}."""
    rows = conn.execute("SELECT slot_name, active, (restart_lsn - '0/0'::pg_lsn)::bigint "
                        "FROM pg_replication_slots WHERE slot_type = 'physical'").fetchall()
    return {r[0]: {"active": r[1], "restart_lsn": r[2]} for r in rows}


def ensure_slots(conn: psycopg.Connection, names: Iterable[str]) -> list[str]:
    """Create the missing physical slots (sanitized names, WAL reserved at once); returns the names created."""
    created = []
    for name in sorted({slot_name(n) for n in names} - set(replication_slots(conn))):
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        created.append(name)
        log.info("created replication slot %s", name)
    return created


def drop_slots_except(conn: psycopg.Connection, keep: Iterable[str]) -> list[str]:
    """Drop physical slots not in `keep` (sanitized); active ones stay. Returns the names dropped."""
    wanted = {slot_name(n) for n in keep}
    dropped = []
    for name, info in sorted(replication_slots(conn).items()):
        if name in wanted or info["active"]:
            continue
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        dropped.append(name)
        log.info("dropped replication slot %s", name)
    return dropped
