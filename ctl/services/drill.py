"""`hactl drill`: rehearse a switchover or failover under write load, measure it and keep a record.

1. create a drill table on the leader; 2. start N writers (ctl/services/drill_load.py); 3. run the real, verified
operation (ctl/services/operations.py); 4. wait until the new leader takes writes and the old one streams; 5. check
every acknowledged id on the new leader; 6. drop the table; 7. write a JSON record. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ctl.errors import PgCommandError
from ctl.model import Cluster
from ctl.services import operations as osvc
from ctl.services.drill_load import Writers, longest_gap, multi_host_dsn
from ctl.services.results import OperationResult, Progress, quiet

SETTLE_BEFORE = 1.0  # seconds of writes before the operation: a baseline for the gap
SETTLE_AFTER = 1.0  # seconds of writes on the new leader before the writers stop


def default_record_dir(env: dict[str, str] | None = None) -> str:
    """$XDG_STATE_HOME/hactl/drills, or ~/.local/state/hactl/drills."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hactl", "drills")


@dataclass
class DrillRecord:
    cluster: str
    action: str
    started_at: str
    writers: int
    max_gap_s: float | None
    from_member: str | None = None
    to_member: str | None = None
    result: str = "unknown"
    message: str = ""
    write_gap_s: float | None = None
    acked_writes: int = 0
    lost_acked_writes: int = 0
    lost_ids: list[int] = field(default_factory=list)
    verified_after_s: float | None = None
    write_errors: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    record_path: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "action": self.action, "started_at": self.started_at,
                "from": self.from_member, "to": self.to_member, "result": self.result, "message": self.message,
                "write_gap_s": self.write_gap_s, "acked_writes": self.acked_writes,
                "lost_acked_writes": self.lost_acked_writes, "lost_ids": self.lost_ids[:20],
                "verified_after_s": self.verified_after_s, "writers": self.writers, "max_gap_s": self.max_gap_s,
                "write_errors": self.write_errors, "timings": self.timings, "passed": self.passed,
                "problems": self.problems, "record": self.record_path}


def _connect(conninfo: dict[str, Any]) -> Any:
    import psycopg

    try:
        return psycopg.connect(**conninfo)
    except psycopg.Error as exc:
        raise PgCommandError(f"drill cannot connect to a writable member: {str(exc).strip()}") from None


def _wait_healthy(dcs: Any, namespace: str, scope: str, old: str | None, conninfo: dict[str, Any], start: float,
                  timeout: float, clock: Callable[[], float] = time.monotonic) -> float | None:
    """Seconds from `start` until a leader other than `old` takes a write and `old` streams (or is gone)."""
    import psycopg

    deadline = clock() + timeout
    while clock() < deadline:
        try:
            cluster = dcs.get_cluster(namespace, scope)
        except Exception:  # noqa: BLE001 - etcd blips during a drill are waited out
            cluster = None
        if cluster is not None and cluster.leader is not None and cluster.leader.name != old:
            om = cluster.member(old) if old else None
            if om is None or om.replication_state == "streaming":
                try:
                    with psycopg.connect(**conninfo) as conn:
                        conn.execute("SELECT pg_catalog.txid_current()")
                    return clock() - start
                except psycopg.Error:
                    pass
        time.sleep(0.1)
    return None


def run_drill(cluster: Cluster, plan: osvc.SwitchoverPlan, dcs: Any, rest: Any, namespace: str, *,
              user: str | None, password: str | None, writers: int = 4, max_gap: float | None = None,
              timeout: float = 60.0, progress: Progress = quiet,
              tick: Callable[[Writers, float], None] | None = None) -> tuple[DrillRecord, OperationResult | None]:
    """Run the drill; the record says what happened (it is returned even when the operation failed).

    Raises:
        PgCommandError: no writable member to create the drill table on (nothing was changed).
    """
    record = DrillRecord(cluster.scope, plan.action, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         writers, max_gap, from_member=plan.leader)
    conninfo = multi_host_dsn(cluster.members, user, password)
    table = "hactl_drill_" + secrets.token_hex(4)
    with _connect(conninfo) as conn:
        ddl = f"CREATE TABLE {table} (id bigint PRIMARY KEY, writer int, at timestamptz DEFAULT now())"
        conn.execute(ddl)  # type: ignore[arg-type] - a generated name, not user input
    progress(f"created table {table}; starting {writers} writers")
    load = Writers(conninfo, table, writers)
    t0 = time.monotonic()
    load.start()
    ticking = threading.Event()
    if tick is not None:
        def _ticker() -> None:
            while not ticking.wait(1.0):
                tick(load, time.monotonic() - t0)

        threading.Thread(target=_ticker, name="drill-progress", daemon=True).start()
    result: OperationResult | None = None
    try:
        time.sleep(SETTLE_BEFORE)
        op_start = time.monotonic()
        progress(f"running the {plan.action}")
        result = osvc.execute_switchover(plan, cluster, dcs, rest, namespace, wait=True, timeout=timeout,
                                         progress=progress)
        record.result, record.message = result.outcome, result.message
        record.timings = {k: round(v, 3) for k, v in result.timings.items()}
        after = result.cluster
        record.to_member = after.leader.name if after is not None and after.leader else None
        if result.ok:
            record.verified_after_s = _round(_wait_healthy(dcs, namespace, cluster.scope, plan.leader, conninfo,
                                                           op_start, timeout))
            if record.verified_after_s is None:
                record.problems.append(f"the cluster was not healthy again within {timeout:.0f}s")
        time.sleep(SETTLE_AFTER)
    finally:
        ticking.set()
        load.stop()
        t1 = time.monotonic()
    acks = load.ack_times()
    record.acked_writes = len(acks)
    record.write_gap_s = _round(longest_gap(acks, t0, t1))
    record.write_errors = load.errors
    progress(f"checking {len(acks)} acknowledged writes on the leader")
    with _connect(conninfo) as conn:
        ids = load.acked_ids()
        found = {r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE id = ANY(%s)", (ids,))}  # type: ignore
        record.lost_ids = sorted(set(ids) - found)
        record.lost_acked_writes = len(record.lost_ids)
        conn.execute(f"DROP TABLE {table}")  # type: ignore
    if result is None or not result.ok:
        record.problems.append(f"the {plan.action} {record.result}: {record.message}")
    if record.lost_acked_writes:
        record.problems.append(f"{record.lost_acked_writes} acknowledged writes are missing on the new leader")
    if max_gap is not None and record.write_gap_s is not None and record.write_gap_s > max_gap:
        record.problems.append(f"the longest write gap {record.write_gap_s:.2f}s exceeds --max-gap {max_gap:g}s")
    return record, result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def save_record(record: DrillRecord, directory: str) -> str:
    """Write the record as `<dir>/<UTC time>-<cluster>-<action>.json`; returns the path.

    Raises:
        OSError: the directory cannot be created or written.
    """
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(directory, f"{stamp}-{record.cluster}-{record.action}.json")
    record.record_path = path
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f, indent=2)
        f.write("\n")
    return path
