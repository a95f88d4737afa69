"""The `hactl check` catalogue on real Patroni 4.1.5 cluster states: one row per finding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ctl.errors import RestError
from ctl.model import DynamicConfig, Failover, SyncState
from ctl.services import check_rules as rules
from ctl.services.check import CheckReport
from tests.unit.test_eligibility import MB, behind, patroni_cluster, patroni_statuses, tagged

NOW = 1_800_000_000.0  # 2027-01-15
ETCD3 = [rules.EtcdMember(f"e{i}", f"http://10.0.0.{i}:2379", True) for i in range(3)]


def inputs(cluster_change=None, statuses_change=None, etcd=ETCD3, pg_settings=None) -> rules.CheckInputs:
    c = patroni_cluster()
    if cluster_change:
        c = cluster_change(c)
    statuses = patroni_statuses()
    if statuses_change:
        statuses_change(statuses)
    return rules.CheckInputs(c, statuses, etcd, None if etcd is not None else "permission denied",
                             pg_settings or {}, NOW)


def config(**data: Any):
    return lambda c: replace(c, config=DynamicConfig({**c.config.data, **data}))


def pg_config(**data: Any):
    return lambda c: replace(c, config=DynamicConfig({**c.config.data, "postgresql": {
        **c.config.data["postgresql"], **data}}))


def found(i: rules.CheckInputs) -> set[tuple[str, str, str | None]]:
    return {(f.check, f.severity, f.member) for f in rules.run(i)}


def test_a_healthy_patroni_cluster_has_only_the_synchronous_mode_hint() -> None:
    assert found(inputs()) == {("synchronous-mode", "info", None)}


def _set(name: str, value: Any):
    def change(statuses: dict) -> None:
        statuses[name] = value(statuses[name]) if callable(value) else value
    return change


ROWS = [
    ("etcd with one member", dict(etcd=ETCD3[:1]), ("etcd-size", "warning", None)),
    ("etcd with an even count", dict(etcd=ETCD3 + [rules.EtcdMember("e3", "http://x:2379", True)]),
     ("etcd-size", "warning", None)),
    ("an unhealthy etcd member", dict(etcd=[*ETCD3[:2], rules.EtcdMember("e2", "http://x:2379", False, "down")]),
     ("etcd-health", "error", None)),
    ("etcd member list unreadable", dict(etcd=None), ("etcd-members", "warning", None)),
    ("no leader", dict(cluster_change=lambda c: replace(c, leader=None)), ("no-leader", "error", None)),
    ("REST API down", dict(statuses_change=_set("node2", RestError("connection refused"))),
     ("rest-unreachable", "error", "node2")),
    ("PostgreSQL down", dict(statuses_change=_set("node2", lambda s: {**s, "state": "stopped"})),
     ("postgres-down", "error", "node2")),
    ("not streaming", dict(statuses_change=_set("node3", lambda s: {**s, "replication_state": "in archive "
                                                                                            "recovery"})),
     ("not-streaming", "warning", "node3")),
    ("lagging", dict(statuses_change=_set("node3", lambda s: behind(s, 3 * MB))), ("lag", "warning", "node3")),
    ("every replica nofailover", dict(statuses_change=lambda st: st.update(
        node2=tagged(st["node2"], nofailover=True), node3=tagged(st["node3"], nofailover=True))),
     ("no-candidate", "error", None)),
    ("pg_rewind without hints (live settings)", dict(pg_settings={"node1": {"wal_log_hints": "off",
                                                                          "data_checksums": "off"}}),
     ("rewind-hints", "error", "node1")),
    ("pg_rewind without hints (dynamic config)", dict(cluster_change=pg_config(parameters={"wal_log_hints": "off"})),
     ("rewind-hints", "error", None)),
    ("use_slots off", dict(cluster_change=pg_config(use_slots=False)), ("use-slots", "warning", None)),
    ("timing", dict(cluster_change=config(ttl=20, loop_wait=10, retry_timeout=10)), ("timing", "error", None)),
    ("sync mode without a sync standby", dict(cluster_change=config(synchronous_mode=True)),
     ("synchronous-mode", "warning", None)),
    ("strict sync mode without a sync standby", dict(cluster_change=config(synchronous_mode=True,
                                                                           synchronous_mode_strict=True)),
     ("synchronous-mode", "error", None)),
    ("different PostgreSQL versions", dict(statuses_change=_set("node3", lambda s: {**s, "server_version": 160004})),
     ("versions", "warning", None)),
    ("different agent versions", dict(statuses_change=_set("node3", lambda s: {**s, "patroni": {"version": "4.0.0",
                                                                                              "name": "node3"}})),
     ("versions", "warning", None)),
    ("pending restart", dict(statuses_change=_set("node2", lambda s: {**s, "pending_restart": True})),
     ("pending-restart", "warning", "node2")),
    ("paused", dict(cluster_change=config(pause=True)), ("paused", "warning", None)),
    ("switchover scheduled in the past", dict(cluster_change=lambda c: replace(
        c, failover=Failover("node1", "node2", "2026-01-01T00:00:00+00:00"))), ("scheduled-past", "warning", None)),
]


@pytest.mark.parametrize("what,kw,expected", ROWS, ids=[r[0] for r in ROWS])
def test_catalogue(what, kw, expected) -> None:
    assert expected in found(inputs(**kw))


def test_sync_mode_with_a_sync_standby_is_quiet() -> None:
    i = inputs(cluster_change=lambda c: replace(config(synchronous_mode=True)(c),
                                                sync=SyncState("node1", ("node3",))))
    assert not [f for f in rules.run(i) if f.check == "synchronous-mode"]


def test_a_future_schedule_is_fine() -> None:
    i = inputs(cluster_change=lambda c: replace(c, failover=Failover("node1", "node2", "2030-01-01T00:00:00+00:00")))
    assert not [f for f in rules.run(i) if f.check == "scheduled-past"]


def test_report_json_counts_and_exit_rule() -> None:
    findings = rules.run(inputs(cluster_change=config(pause=True), etcd=ETCD3[:1]))
    report = CheckReport("demo", tuple(findings))
    doc = report.to_json()
    assert doc["cluster"] == "demo" and doc["summary"] == {"error": 0, "warning": 2, "info": 1}
    assert set(doc["findings"][0]) == {"check", "severity", "member", "message", "fix"}
    assert [f["severity"] for f in doc["findings"]] == ["warning", "warning", "info"]
    assert not report.failed(strict=False) and report.failed(strict=True)
    stopped = CheckReport("demo", tuple(rules.run(inputs(statuses_change=_set("node2", RestError("refused"))))))
    assert stopped.failed(strict=False)


def test_every_check_has_a_fix() -> None:
    everything = inputs(cluster_change=lambda c: replace(config(pause=True, synchronous_mode=True, ttl=5,
                                                                use_slots=False)(c), leader=None),
                        statuses_change=lambda st: st.update(node2=RestError("x")), etcd=ETCD3[:2])
    for f in rules.run(everything):
        assert f.fix and f.message and f.severity in rules.SEVERITIES, f
