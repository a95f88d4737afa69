"""`failsafe_mode`, the agent's side: the `failsafe` key, the POST /failsafe exchange and the REST handler.

The rules (when the primary keeps running, who may race) are pure functions in ctl/ha/failsafe.py; this module does
the I/O they need and nothing else:

- after each renewal of the leader lock the leader writes `failsafe` = `{name: api_url}` of every member (and
  itself) as compact JSON, exactly as Patroni does, when the value changed;
- while the DCS is unreachable a running primary POSTs /failsafe to every other member listed in the last key it
  read (in parallel, 2 s timeout, one retry, as Patroni) and records whether all answered `200 Accepted`;
- a replica answers such a POST with `Accepted` (and an `lsn` header) and remembers the sender for ttl seconds,
  during which it does not race for the lock.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Mapping

from ctl.dcs import keys
from ctl.errors import CtlError
from ctl.ha.state import FailsafeView, PgView
from ctl.model import Cluster
from ctl.pg.conf import slot_name

if TYPE_CHECKING:
    from ctl.agent.api import ApiServer, Request, Response
    from ctl.agent.loop import Agent

log = logging.getLogger("hactl.agent")

POST_TIMEOUT = 2.0  # Patroni's (hard-coded) timeout for POST /failsafe, with one retry


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1")
    return value is True or (isinstance(value, int) and not isinstance(value, bool) and value != 0)


def _slots(value: Any) -> dict[str, int]:
    """The `slots` of a POST /failsafe body: {slot name: LSN}; anything malformed is left out."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            and v >= 0}


def encode_key(members: Mapping[str, str]) -> str:
    """The `failsafe` value as Patroni writes it: `json.dumps(..., separators=(',', ':'))`, insertion order."""
    return json.dumps(dict(members), separators=(",", ":"))


def key_value(cluster: Cluster, name: str, api_url: str) -> dict[str, str]:
    """Every member with an api_url (in key order), plus this leader (Patroni's `Ha._failsafe_config`)."""
    value = {m.name: m.api_url for m in cluster.members if m.api_url}
    if name not in value:
        value[name] = api_url
    return value


class Failsafe:
    """Per-agent failsafe state; read by the loop (observe, after renewal) and the REST thread (POST)."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self.members: dict[str, str] | None = None  # the last `failsafe` key read from the DCS
        self._received: tuple[str, float] | None = None  # (leader name, monotonic time) of the last POST accepted
        self._active_at: float = 0.0  # the leader: monotonic time of the last check that passed (0: DCS back since)
        # the leader: start of the last exchange every member accepted; they do not race until ttl after it, even
        # if etcd answered in between (so unlike _active_at it is not reset)
        self._passed_at: float = 0.0
        # a replica: the `slots` of the last POST accepted ({slot name: LSN}). Patroni copies them into its view of
        # `status` to advance its copies of the leader's permanent slots; hactl replicas keep no such copies, so
        # they are only kept here (and a hactl replica answers a Patroni leader exactly as a Patroni one would)
        self.received_slots: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------------ state
    def enabled(self) -> bool:
        good = self.agent.good_config
        return bool(good is not None and _truthy(good.data.get("failsafe_mode", False)))

    def is_active(self) -> bool:
        """`failsafe_mode_is_active` in /patroni: within ttl of the last passed check (leader) or POST (replica)."""
        ttl = self.agent.settings.ttl
        now = time.monotonic()
        with self._lock:
            received = self._received
        if self._active_at and now - self._active_at < ttl:
            return True
        return bool(received and now - received[1] < ttl)

    # ------------------------------------------------------------------------------------------------ loop side
    def observe(self, cluster: Cluster | None, pg: PgView) -> FailsafeView:
        """What decide() needs; with the DCS down, a primary POSTs /failsafe to every member first."""
        if cluster is not None:
            self.members = dict(cluster.failsafe) if isinstance(cluster.failsafe, Mapping) else None
            self._active_at = 0.0  # Patroni resets it on the leader once the DCS answers
        enabled = self.enabled()
        view = FailsafeView(enabled=enabled, members=self.members, leader=self._recent_leader())
        if not enabled or cluster is not None or not (pg.running and pg.in_recovery is False):
            return view
        me = self.agent.name
        if self.members is None or me not in self.members:
            return view
        others = {n: url for n, url in self.members.items() if n != me}
        started = time.monotonic()  # replicas accepted no earlier than this: their ttl window starts here
        deadline = self.answers_due(started)
        since = started - self._base()
        failed = tuple(sorted(n for n, ok in self._post_all(others, deadline, pg).items() if not ok))
        took = time.monotonic() - started
        if not failed:
            first = not self._active_at  # the first passed exchange of this outage is logged at info
            self._active_at = self._passed_at = started
            log.log(logging.INFO if first else logging.DEBUG, "failsafe: %d members accepted POST /failsafe in "
                    "%.2fs, asked %.2fs after the last renewal or passed exchange", len(others), took, since)
        else:
            self._active_at = 0.0
            log.warning("failsafe: %s did not accept POST /failsafe (asked %.2fs after the last renewal or passed "
                        "exchange, gave up after %.2fs)", ", ".join(failed), since, took)
        return FailsafeView(enabled=True, members=self.members, all_accepted=not failed, unreachable=failed)

    def _base(self) -> float:
        return max(self.agent.node.last_lock_renewal or 0.0, self._passed_at)

    def answers_due(self, now: float) -> float:
        """Until when POST /failsafe answers count: retry_timeout before anyone could act on our silence.

        Nobody can take over before ttl after max(the last lease keepalive etcd answered, the start of the last
        exchange every member accepted): the lease and the leader key on it live until the first, replicas stay
        off the race until the second. Keeping retry_timeout of that for the demotion leaves the exchange at
        least retry_timeout/3 (ctl/agent/dcsfail.py). Patroni waits 2 s per request and retries once, whatever
        is left (#3550).
        """
        s = self.agent.settings
        base = self._base()
        if not base:
            return now + 2 * POST_TIMEOUT
        return min(now + 2 * POST_TIMEOUT, base + s.ttl - s.retry_timeout)

    def after_renewal(self) -> None:
        """The leader renewed its lock: write the `failsafe` key when failsafe_mode is on and the value changed."""
        a = self.agent
        if not self.enabled() or a.cluster is None:
            return
        value = key_value(a.cluster, a.name, a.api_url)
        if value == self.members:
            return
        try:
            a.dcs.put(keys.FAILSAFE, encode_key(value))
            self.members = value
        except CtlError as exc:
            log.warning("cannot write the failsafe key: %s", exc)

    def _recent_leader(self) -> str | None:
        with self._lock:
            received = self._received
        if received and time.monotonic() - received[1] < self.agent.settings.ttl:
            return received[0]
        return None

    def _post_all(self, targets: Mapping[str, str], deadline: float, pg: PgView) -> dict[str, bool]:
        if not targets:
            return {}
        body = json.dumps(self.payload(pg)).encode("utf-8")
        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            results = dict(zip(targets, pool.map(lambda url: self._post(url, body, deadline), targets.values())))
        return results

    def payload(self, pg: PgView) -> dict[str, Any]:
        """The POST body, as Patroni's: `slots` maps slot names to LSNs (Patroni's `Postgresql.slots()`: its
        permanent slots, none in hactl, plus its own member slot at its current WAL position), omitted when the
        position is unknown."""
        a = self.agent
        data: dict[str, Any] = {"name": a.name, "conn_url": a.conn_url, "api_url": a.api_url}
        if pg.wal_lsn is not None:
            data["slots"] = {slot_name(a.name): int(pg.wal_lsn)}
        return data

    def _post(self, api_url: str, body: bytes, deadline: float) -> bool:
        base = api_url.rsplit("/", 1)[0] if api_url.endswith("/patroni") else api_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        rest = self.agent.config.restapi
        if rest.username is not None and rest.password is not None:
            token = base64.b64encode(f"{rest.username}:{rest.password}".encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        for _ in range(2):  # one retry, as Patroni
            left = deadline - time.monotonic()
            if left <= 0.05:
                return False
            try:
                req = urllib.request.Request(base + "/failsafe", data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=min(POST_TIMEOUT, left)) as resp:  # noqa: S310
                    return resp.status == 200 and resp.read().decode("utf-8", "replace") == "Accepted"
            except Exception:  # noqa: BLE001 - any failure means "not accessible"
                continue
        return False

    # ------------------------------------------------------------------------------------------------ REST side
    def post_failsafe(self, request: "Request") -> "Response":
        """`POST /failsafe` from the leader while the DCS is down (Patroni's do_POST_failsafe)."""
        from ctl.agent.api import Response

        if not self.enabled():
            return Response(502, error=True)
        st = self.agent.status()
        if st.role == "primary" and st.state == "running":
            return Response(500, "Running as a leader")
        data = request.data if isinstance(request.data, dict) else {}
        name = data.get("name")
        if not isinstance(name, str) or not name:
            return Response(400, error=True)
        with self._lock:
            self._received = (name, time.monotonic())
            self.received_slots = _slots(data.get("slots"))
        lsn = st.replayed_location if st.replayed_location is not None else st.received_location
        headers = {"lsn": str(lsn)} if lsn is not None else {}
        return Response(200, "Accepted", headers=headers)


def register(api: "ApiServer", agent: "Agent") -> None:
    """POST /failsafe (basic auth and allowlist apply; Patroni skips only allowlist_include_members)."""
    api.register("POST", "failsafe", agent.failsafe.post_failsafe, body="optional")
