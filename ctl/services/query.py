"""`query`: run SQL on a member chosen by role or name, as the configured superuser unless told otherwise.

psycopg is imported here only (and lazily). Errors become PgCommandError with the server's message and SQLSTATE;
the password never appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctl.errors import NotFound, PgCommandError, Refused, UsageError
from ctl.model import Cluster, Member
from ctl.services.cluster import select_member

_RECOVERY_ROLES = {"replica": True, "standby": True, "standby-leader": True, "primary": False}


@dataclass
class QueryResult:
    member: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    status: str = ""  # the command tag, e.g. "INSERT 0 1"


def pick_member(cluster: Cluster, role: str | None, member: str | None) -> Member:
    """The member to query: by name, else the first with the role (default: the leader).

    Raises:
        UsageError, NotFound: see ctl.services.cluster.select_member.
    """
    m = select_member(cluster, role, member)
    if not m.conn_url:
        raise NotFound(f"member {m.name} has no conn_url in the DCS")
    return m


def run_query(m: Member, sql: str, *, user: str, password: str | None, dbname: str | None,
              role: str | None = None, connect_timeout: int = 5) -> QueryResult:
    """Connect to the member and run `sql`; with a replica/primary role, check pg_is_in_recovery() first.

    Raises:
        PgCommandError: no connection, or the statement failed (the server's message).
        Refused: the member's PostgreSQL is not in the role asked for.
    """
    import psycopg

    kwargs: dict[str, Any] = {"host": m.host, "port": m.port, "user": user, "connect_timeout": connect_timeout,
                              "fallback_application_name": "hactl query", "autocommit": True}
    if password:
        kwargs["password"] = password
    if dbname:
        kwargs["dbname"] = dbname
    try:
        conn = psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        raise PgCommandError(f"No connection to member {m.name} ({m.host}:{m.port}) is available: "
                             f"{_message(exc)}") from None
    with conn:
        try:
            want = _RECOVERY_ROLES.get(role or "")
            if want is not None:
                in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
                if in_recovery != want:
                    raise Refused(f"member {m.name} is {'in' if in_recovery else 'not in'} recovery; "
                                  f"it is not a {role} right now")
            cur = conn.execute(sql)  # type: ignore[arg-type] - an operator's ad-hoc SQL, on purpose
            result = QueryResult(m.name, status=cur.statusmessage or "")
            if cur.description:
                result.columns = [d.name for d in cur.description]
                result.rows = [tuple(r) for r in cur.fetchall()]
            return result
        except psycopg.Error as exc:
            raise PgCommandError(f"{_message(exc)}") from None


def _message(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = primary or str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if primary:
        severity = getattr(diag, "severity", None) or "ERROR"
        text = f"{severity}: {primary}"
    return f"{text} (SQLSTATE {state})" if state else text


def read_sql(command: str | None, file: str | None) -> str:
    """Raises: UsageError (both or neither given, unreadable file)."""
    if command and file:
        raise UsageError("--file and --command are mutually exclusive options")
    if not command and not file:
        raise UsageError("You need to specify either --command or --file")
    if command:
        return command
    import sys

    try:
        if file == "-":
            return sys.stdin.read()
        with open(str(file), encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
