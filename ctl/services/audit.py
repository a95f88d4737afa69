"""The audit trail in etcd: append an entry (and trim to the retention), read it, delete it with the cluster.

Layout, values and redaction are in ctl/dcs/audit.py (shared with the agent).
"""

from __future__ import annotations

from typing import Any

from ctl.dcs import audit as layout
from ctl.dcs import keys
from ctl.dcs.audit import AuditEntry


def prefix(namespace: str, scope: str) -> str:
    return keys.cluster_prefix(namespace, scope) + layout.PREFIX


def append(dcs: Any, namespace: str, scope: str, entry: AuditEntry, keep: int = layout.KEEP) -> str:
    """Write `entry` under a new sortable id, then delete the oldest entries beyond `keep`. Returns the id.

    Raises:
        DcsError, DcsUnavailable: from the gateway.
    """
    entry_id = layout.new_id()
    dcs.put(prefix(namespace, scope) + entry_id, layout.encode(entry))
    trim(dcs, namespace, scope, keep)
    return entry_id


def trim(dcs: Any, namespace: str, scope: str, keep: int = layout.KEEP) -> int:
    """Delete the oldest entries so that at most `keep` remain; returns how many were deleted."""
    p = prefix(namespace, scope)
    count = dcs.count_prefix(p)
    if count <= keep:
        return 0
    oldest = dcs.first_keys(p, count - keep)
    if not oldest:
        return 0
    return dcs.delete_range(oldest[0], oldest[-1] + "\0")


def read(dcs: Any, namespace: str, scope: str, last: int | None = None) -> list[AuditEntry]:
    """The trail, oldest first (key order is time order); the newest `last` entries when given.

    Raises:
        DcsError, DcsUnavailable: from the gateway.
    """
    p = prefix(namespace, scope)
    kvs, _ = dcs.get_prefix(p)
    entries = [e for kv in sorted(kvs, key=lambda kv: kv.key)
               if (e := layout.decode(kv.key[len(p):], kv.value, scope)) is not None]
    return entries[-last:] if last else entries
