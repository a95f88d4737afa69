"""`hactl check`: gather one snapshot (etcd keys, members' REST status, etcd's member health, two PostgreSQL
settings) and run the catalogue in ctl/services/check_rules.py. Works the same against Patroni and hactl agents."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

from ctl.errors import CtlError
from ctl.model import Cluster, Member
from ctl.services import check_rules as rules
from ctl.services.check_rules import EtcdMember, Finding

_ORDER = {s: i for i, s in enumerate(rules.SEVERITIES)}


@dataclass(frozen=True)
class CheckReport:
    cluster: str
    findings: tuple[Finding, ...]

    @property
    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in rules.SEVERITIES}
        for f in self.findings:
            counts[f.severity] = counts.get(f.severity, 0) + 1
        return counts

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (_ORDER.get(f.severity, 9), f.check, f.member or ""))

    def failed(self, strict: bool) -> bool:
        s = self.summary
        return s["error"] > 0 or (strict and s["warning"] > 0)

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "findings": [f.to_json() for f in self.sorted()], "summary": self.summary}


def etcd_health(dcs: Any) -> tuple[list[EtcdMember] | None, str | None]:
    """etcd's member list and each member's /health, asked concurrently."""
    try:
        listed = dcs.etcd_members()
    except CtlError as exc:
        return None, exc.message
    urls = [(str(m.get("name") or ""), (m.get("clientURLs") or [""])[0]) for m in listed]

    def probe(item: tuple[str, str]) -> EtcdMember:
        name, url = item
        if not url:
            return EtcdMember(name, "", None, "no client URL (not started yet?)")
        healthy, why = dcs.endpoint_health(url)
        return EtcdMember(name, url, healthy, why)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(urls)))) as pool:
        return list(pool.map(probe, urls)), None


def pg_settings(cluster: Cluster, statuses: Mapping[str, Any], superuser: Any) -> dict[str, dict[str, str]]:
    """wal_log_hints and data_checksums of every running member, when the CLI can log in; {} otherwise."""
    if superuser is None or not getattr(superuser, "username", None):
        return {}

    def one(m: Member) -> tuple[str, dict[str, str] | None]:
        import psycopg

        try:
            with psycopg.connect(host=m.host, port=m.port, user=superuser.username, password=superuser.password,
                                 dbname="postgres", connect_timeout=3, autocommit=True,
                                 application_name="hactl check") as conn:
                row = conn.execute("SELECT current_setting('wal_log_hints'), "
                                   "current_setting('data_checksums')").fetchone()
        except Exception:  # noqa: BLE001 - no login from here: the check falls back to the dynamic config
            return m.name, None
        return m.name, {"wal_log_hints": str(row[0]), "data_checksums": str(row[1])} if row else None

    running = [m for m in cluster.members if m.host and isinstance(statuses.get(m.name), Mapping)
               and statuses[m.name].get("state") == "running"]
    if not running:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
        return {name: s for name, s in pool.map(one, running) if s is not None}


def run_check(cluster: Cluster, dcs: Any, rest: Any, superuser: Any = None) -> CheckReport:
    members = list(cluster.members)
    statuses = {m.name: r for m, r in zip(members, rest.map(rest.get_patroni, members))}
    etcd, etcd_error = etcd_health(dcs)
    pg_cfg = cluster.config.data.get("postgresql") if cluster.config else None
    wants_settings = isinstance(pg_cfg, Mapping) and rules._on(pg_cfg.get("use_pg_rewind"))
    settings = pg_settings(cluster, statuses, superuser) if wants_settings else {}
    inputs = rules.CheckInputs(cluster, statuses, etcd, etcd_error, settings, time.time())
    return CheckReport(cluster.scope, tuple(rules.run(inputs)))
