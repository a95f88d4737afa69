"""After a promotion: the new timeline's entry in the `history` key, read from PostgreSQL's history file."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any

from ctl.dcs import codec, keys
from ctl.errors import CtlError
from ctl.model import HistoryEntry, lsn_from_str

log = logging.getLogger("hactl.agent")


def write_history(dcs: Any, data_dir: str, leader: str, old_tl: int | None, new_tl: int | None) -> None:
    """Append the entry for `new_tl` (parent timeline, switch LSN, reason) when the timeline went up."""
    if not new_tl or (old_tl and new_tl <= old_tl):
        return
    entry = history_entry(data_dir, leader, new_tl)
    if entry is None:
        return
    try:
        cluster = dcs.get_cluster()
        history = [h for h in cluster.history if h.timeline < entry.timeline] + [entry]
        dcs.put(keys.HISTORY, codec.encode_history(history))
    except CtlError as exc:
        log.warning("cannot write history: %s", exc)


def history_entry(data_dir: str, leader: str, new_tl: int) -> HistoryEntry | None:
    """The last line of the new timeline's history file: parent timeline, switch LSN, reason."""
    path = os.path.join(data_dir, "pg_wal", f"{new_tl:08X}.history")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError:
        return None
    if not lines:
        return None
    fields = lines[-1].split("\t")
    try:
        tl, lsn = int(fields[0]), lsn_from_str(fields[1])
    except (ValueError, IndexError):
        return None
    reason = fields[2].strip() if len(fields) > 2 else ""
    ts = datetime.now(timezone.utc).isoformat()
    return HistoryEntry(timeline=tl, lsn=lsn, reason=reason, timestamp=ts, new_leader=leader)
