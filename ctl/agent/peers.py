"""Ask the other members over REST where they are (`GET /patroni`), concurrently and with a short timeout.

Used only when the leader key is gone: a replica takes the lock only if no reachable peer is further ahead.
stdlib only, so the agent needs no HTTP client library on this path.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping

from ctl.ha.state import PeerView
from ctl.model import Member, tags_failover_priority, tags_nofailover


def _wal(data: Mapping[str, Any]) -> int | None:
    xlog = data.get("xlog") if isinstance(data.get("xlog"), Mapping) else {}
    values = [xlog.get(k) for k in ("location", "received_location", "replayed_location")]
    ints = [int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(ints) if ints else None


def parse_status(name: str, data: Mapping[str, Any]) -> PeerView:
    tags = data.get("tags") if isinstance(data.get("tags"), Mapping) else {}
    return PeerView(
        name=name,
        reachable=True,
        wal_lsn=_wal(data),
        is_primary=data.get("role") in ("primary", "master") and data.get("state") == "running",
        nofailover=tags_nofailover(tags),
        failover_priority=tags_failover_priority(tags),
        timeline=data["timeline"] if isinstance(data.get("timeline"), int) else None,
    )


def _fetch(member: Member, timeout: float, context: ssl.SSLContext | None) -> PeerView:
    base = member.api_base
    if not base:
        return PeerView(member.name, reachable=False)
    try:
        with urllib.request.urlopen(base + "/patroni", timeout=timeout, context=context) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except Exception:  # noqa: BLE001 - any failure means "not reachable" for the election
        return PeerView(member.name, reachable=False)
    return parse_status(member.name, data if isinstance(data, dict) else {})


def fetch_peers(members: Iterable[Member], *, timeout: float = 1.0,
                context: ssl.SSLContext | None = None) -> dict[str, PeerView]:
    members = list(members)
    if not members:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        views = list(pool.map(lambda m: _fetch(m, timeout, context), members))
    return {v.name: v for v in views}
