"""The audit trail's key layout and values: `/<namespace>/<scope>/hactl/audit/<sortable id>` holding one JSON entry.

Pure (no I/O). Patroni and patronictl read only the keys they know under the cluster prefix and ignore this subtree
(checked against real patronictl in tests/integration); hactl's own codec ignores it too. Entries are written by the
CLI for every changing command and by the hactl agent for its automatic events. Retention: the newest `KEEP` entries
per cluster; every writer trims the oldest beyond that, because every agent (Patroni's too) reads the whole cluster
prefix on each HA loop, so the trail must stay small.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

PREFIX = "hactl/audit/"  # relative to the cluster prefix
KEEP = 200  # entries kept per cluster (the oldest are deleted beyond this)
MAX_TEXT = 500  # characters kept of any one argument or reason

_SECRET_NAMES = re.compile(r"pass(word)?|secret|token|credential|private|api_?key|auth", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def new_id(now: datetime | None = None) -> str:
    """A key name that sorts by time: `20261128T021503.123456Z-1a2b3c`."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


def redact(value: Any, name: str = "") -> Any:
    """The value with secrets replaced by `***`: by parameter name, `password=` in a DSN, `user:pass@` in a URL."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, name) for v in value]
    if name and _SECRET_NAMES.search(name) and value not in (None, False, "", True):
        return "***"
    if isinstance(value, str):
        text = _URL_PASSWORD.sub(r"\1***\3", _DSN_PASSWORD.sub(r"\1***", value))
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
    return value


@dataclass(frozen=True)
class AuditEntry:
    time: str  # ISO 8601, UTC
    command: str
    user: str = ""
    host: str = ""
    source: str = "hactl"  # hactl (the CLI) | agent
    args: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    result: str = ""
    exit_code: int | None = None
    duration_s: float | None = None
    member: str | None = None  # the agent's own name for an automatic event
    id: str = ""
    cluster: str = ""

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.id, "cluster": self.cluster, "time": self.time, "source": self.source, "user": self.user,
             "host": self.host, "command": self.command, "args": dict(self.args), "reason": self.reason,
             "result": self.result, "exit_code": self.exit_code, "duration_s": self.duration_s}
        if self.member:
            d["member"] = self.member
        return d


def encode(entry: AuditEntry) -> str:
    d = entry.to_json()
    d.pop("id", None)
    d.pop("cluster", None)
    return json.dumps(d, separators=(",", ":"), sort_keys=True)


def decode(entry_id: str, value: str, cluster: str = "") -> AuditEntry | None:
    """None for a value that is not an audit entry (hand-edited or foreign)."""
    try:
        d = json.loads(value)
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("command"), str):
        return None
    duration = d.get("duration_s")
    code = d.get("exit_code")
    return AuditEntry(
        time=str(d.get("time") or ""), command=d["command"], user=str(d.get("user") or ""),
        host=str(d.get("host") or ""), source=str(d.get("source") or "hactl"),
        args=d["args"] if isinstance(d.get("args"), dict) else {},
        reason=d.get("reason") if isinstance(d.get("reason"), str) else None,
        result=str(d.get("result") or ""), exit_code=code if isinstance(code, int) else None,
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        member=d.get("member") if isinstance(d.get("member"), str) else None, id=entry_id, cluster=cluster)


def who() -> tuple[str, str]:
    """(OS user, host name) of this process."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container: the uid will do
        user = str(os.getuid())
    return user, socket.gethostname()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
