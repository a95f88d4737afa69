"""The candidate rules (ctl/ha/eligibility.py) as a table, on a real Patroni 4.1.5 cluster state, and the proof that
`hactl plan` and the agent's HA loop judge the same state the same way."""

from __future__ import annotations

import copy
import json
import pathlib
from dataclasses import replace
from typing import Any

import pytest

from ctl.agent.peers import parse_status
from ctl.dcs.codec import parse_cluster
from ctl.dcs.gateway import parse_range_response
from ctl.errors import RestError
from ctl.ha import eligibility as el
from ctl.ha.actions import Kind
from ctl.ha.decide import decide
from ctl.ha.state import HaSettings, Observation, PeerView, PgView
from ctl.model import Cluster, DynamicConfig, Failover, SyncState
from ctl.services import plan as psvc

FIX = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "patroni-4.1.5"
MB = 1048576


def patroni_cluster() -> Cluster:
    """/service/demo/ as real Patroni 4.1.5 left it: node1 leads, node2 and node3 stream, lag 0."""
    kvs, revision = parse_range_response(json.loads((FIX / "dcs_get_prefix.json").read_text()))
    return parse_cluster("demo", "/service/demo/", kvs, revision)


def patroni_statuses() -> dict[str, Any]:
    """GET /patroni of each member, from the real leader and replica answers."""
    leader = json.loads((FIX / "rest" / "leader_patroni.json").read_text())
    replica = json.loads((FIX / "rest" / "replica_patroni.json").read_text())
    out = {"node1": leader}
    for name in ("node2", "node3"):
        r = copy.deepcopy(replica)
        r["patroni"]["name"] = name
        out[name] = r
    return out


LEADER_LSN = 67416816


def behind(status: dict, n: int) -> dict:
    s = copy.deepcopy(status)
    s["xlog"]["received_location"] = s["xlog"]["replayed_location"] = LEADER_LSN - n
    return s


def tagged(status: dict, **tags: Any) -> dict:
    return {**copy.deepcopy(status), "tags": tags}


def configured(c: Cluster, **data: Any) -> Cluster:
    return replace(c, config=DynamicConfig({**(c.config.data if c.config else {}), **data}))


# Each row: (what, change to the cluster, change to node3's status, action, candidate, node3's reasons)
ROWS = [
    ("healthy", None, None, "switchover", None, []),
    ("nofailover tag", None, lambda s: tagged(s, nofailover=True), "switchover", None, ["is tagged nofailover"]),
    ("failover_priority 0", None, lambda s: tagged(s, failover_priority=0), "switchover", None,
     ["is tagged nofailover"]),
    ("REST unreachable", None, lambda s: RestError("connection refused"), "switchover", None,
     ["does not answer on its REST API"]),
    ("PostgreSQL stopped", None, lambda s: {**s, "state": "stopped"}, "switchover", None,
     ["does not run PostgreSQL"]),
    ("older timeline", None, lambda s: {**s, "timeline": 0}, "switchover", None,
     ["is on timeline 0, the leader on timeline 1"]),
    ("lag past the limit", None, lambda s: behind(s, 17 * MB), "switchover", None,
     ["lags 17.0 MB behind (maximum_lag_on_failover 1.0 MB)"]),
    ("lag within the limit", None, lambda s: behind(s, MB), "switchover", None, []),
    ("lag ignored without a healthy leader", lambda c: replace(c, leader=None), lambda s: behind(s, 17 * MB),
     "failover", None, []),
    ("not a sync standby", lambda c: replace(configured(c, synchronous_mode=True),
                                             sync=SyncState("node1", ("node2",))), None, "switchover", None,
     ["is not a synchronous standby (synchronous_mode on; sync standbys: node2)"]),
    ("a failover may go to an async member", lambda c: replace(configured(c, synchronous_mode=True),
                                                               sync=SyncState("node1", ("node2",))),
     None, "failover", "node3", []),
    ("paused, no candidate named", lambda c: configured(c, pause=True), None, "switchover", None,
     ["cannot be chosen automatically: the cluster is paused (name one with --candidate)"]),
    ("paused, candidate named", lambda c: configured(c, pause=True), None, "switchover", "node3", []),
    ("a switchover is scheduled", lambda c: replace(c, failover=Failover("node1", "node2",
                                                                         "2030-01-01T00:00:00+00:00")),
     None, "switchover", None,
     ["waits for the switchover already scheduled at 2030-01-01T00:00:00+00:00 (cancel it with flush)"]),
    ("every reason at once", None, lambda s: behind(tagged({**s, "timeline": 0}, nofailover=True), 2 * MB),
     "switchover", None, ["is tagged nofailover", "is on timeline 0, the leader on timeline 1",
                          "lags 2.0 MB behind (maximum_lag_on_failover 1.0 MB)"]),
]


@pytest.mark.parametrize("what,change,status_change,action,candidate,reasons", ROWS, ids=[r[0] for r in ROWS])
def test_rule_table(what, change, status_change, action, candidate, reasons) -> None:
    c = patroni_cluster()
    if change:
        c = change(c)
    statuses = patroni_statuses()
    if status_change:
        statuses["node3"] = status_change(statuses["node3"])
    report = psvc.evaluate(c, action, candidate, statuses)
    row = next(v for v in report.members if v.member == "node3")
    assert list(row.reasons) == reasons
    assert row.eligible is (not reasons)


def test_plan_json_shape_and_choice() -> None:
    statuses = patroni_statuses()
    statuses["node2"] = behind(statuses["node2"], 4096)
    report = psvc.evaluate(patroni_cluster(), "switchover", None, statuses)
    doc = report.to_json()
    assert doc["cluster"] == "demo" and doc["action"] == "switchover" and doc["leader"] == "node1"
    assert doc["chosen"] == "node3"  # least lag wins
    assert doc["members"][0] == {"member": "node1", "role": "leader", "eligible": False,
                                 "reasons": ["is the current leader"], "lag_bytes": 0, "timeline": 1}
    assert doc["members"][1]["lag_bytes"] == 4096 and doc["members"][2]["lag_bytes"] == 0
    # equal position: failover_priority decides, then the name
    statuses = patroni_statuses()
    statuses["node3"] = tagged(statuses["node3"], failover_priority=5)
    assert psvc.evaluate(patroni_cluster(), "switchover", None, statuses).chosen == "node3"
    assert psvc.evaluate(patroni_cluster(), "switchover", None, patroni_statuses()).chosen == "node2"


def test_refusal_names_every_member_with_its_reasons() -> None:
    statuses = patroni_statuses()
    statuses["node2"] = tagged(statuses["node2"], nofailover=True)
    statuses["node3"] = behind(statuses["node3"], 17 * MB)
    report = psvc.evaluate(patroni_cluster(), "switchover", None, statuses)
    assert report.chosen is None
    with pytest.raises(Exception) as exc:
        psvc.refuse_unless_eligible(report)
    assert exc.value.message == ("no eligible candidate for a switchover in cluster demo: node2: is tagged "
                                 "nofailover; node3: lags 17.0 MB behind (maximum_lag_on_failover 1.0 MB)")


# ------------------------------------------------------------------------------- plan and agent agree


def _agent_decision(c: Cluster, statuses: dict[str, Any], candidate: str | None):
    """What node1's HA loop decides for a switchover request on the same state the plan saw."""
    peers = {n: parse_status(n, s) if isinstance(s, dict) else PeerView(n, reachable=False)
             for n, s in statuses.items() if n != "node1"}
    c = replace(c, failover=Failover("node1", candidate))
    max_lag = c.config.maximum_lag_on_failover if c.config else MB
    obs = Observation(name="node1", now=100.0, settings=HaSettings(maximum_lag_on_failover=max_lag),
                      pg=PgView(running=True, in_recovery=False, timeline=1, wal_lsn=LEADER_LSN,
                                data_dir_empty=False, system_identifier=c.initialize),
                      cluster=c, peers=peers, wall_time=2e9)
    return decide(obs)


AGREE = [
    ("all healthy", {}, None),
    ("node3 lags, node2 tagged", {"node2": lambda s: tagged(s, nofailover=True),
                                  "node3": lambda s: behind(s, 17 * MB)}, None),
    ("named candidate lags", {"node3": lambda s: behind(s, 3 * MB)}, "node3"),
    ("named candidate unreachable", {"node2": lambda s: RestError("timed out")}, "node2"),
    ("named candidate on an old timeline", {"node2": lambda s: {**s, "timeline": 0}}, "node2"),
    ("node2 ahead of node3", {"node3": lambda s: behind(s, 100)}, None),
]


@pytest.mark.parametrize("what,changes,candidate", AGREE, ids=[a[0] for a in AGREE])
def test_plan_and_agent_agree(what, changes, candidate) -> None:
    c = patroni_cluster()
    statuses = patroni_statuses()
    for name, change in changes.items():
        statuses[name] = change(statuses[name])
    report = psvc.evaluate(c, "switchover", candidate, statuses)
    decision = _agent_decision(c, statuses, candidate)
    if report.chosen is not None:
        assert decision.kinds[0] == Kind.STEP_DOWN and decision.actions[0].target == report.chosen, decision
        return
    assert Kind.CLEAR_FAILOVER in decision.kinds, decision
    if candidate:
        row = next(v for v in report.members if v.member == candidate)
        assert decision.reason == f"switchover refused: {candidate} " + "; ".join(row.reasons)
    else:
        for name, reasons in report.refusals.items():
            assert f"{name} {reasons}" in decision.reason, (decision.reason, name, reasons)


def test_each_rule_is_one_function() -> None:
    names = [name for name, _ in el.RULES]
    assert len(names) == len(set(names)) and {"nofailover", "rest", "timeline", "lag", "sync", "pause",
                                                "scheduled"} <= set(names)
    c = el.Candidate("x", None, reachable=True, wal_lsn=0)
    s = el.Situation("switchover", "leader", 0)
    assert el.problems(s, c) == ["has no member key in etcd"]
    assert el.problems(s, c, rules=()) == []
