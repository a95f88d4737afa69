"""A restart scheduled over REST (`POST /restart {"schedule": ..., "role": ..., ...}`): when it is due, and whether
its conditions still hold. Pure; the loop starts the restart task."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping


def check(sched: Mapping[str, Any] | None, now: float, role: str, pg_state: Any) -> str | None:
    """None: nothing to do yet. "": run it now. Any other text: drop it, this is why (its condition fails)."""
    if not sched:
        return None
    try:
        due = datetime.fromisoformat(str(sched["schedule"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return "cannot read its time"
    if now < due:
        return None
    want_role = sched.get("role")
    if want_role and want_role != role and not (want_role == "primary" and role == "master"):
        return f"role is {role}, not {want_role}"
    s = pg_state
    if sched.get("restart_pending") and not (s is not None and s.pending_restart):
        return "no restart pending"
    want = sched.get("postgres_version")
    if want and s is not None and s.server_version and not _version_below(s.server_version, str(want)):
        return f"PostgreSQL is not older than {want}"
    return ""


def _version_below(server_version: int, wanted: str) -> bool:
    """server_version_num (150018) < a dotted version ("15.19")."""
    parts = [int(p) for p in wanted.split(".") if p.isdigit()]
    if not parts:
        return False
    major = parts[0]
    minor = parts[1] if len(parts) > 1 else 0
    want = major * 10000 + minor if major >= 10 else major * 10000 + minor * 100 + (parts[2] if len(parts) > 2 else 0)
    return server_version < want
