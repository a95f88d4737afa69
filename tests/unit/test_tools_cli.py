"""plan, check, audit, drill and list --all through the CLI (CliRunner), with fakes at the protocol boundaries."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import yaml

from ctl.dcs import audit as layout
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.errors import ExitCode
from ctl.model import Cluster, Member
from ctl import render_tools
from ctl.services import audit as asvc
from ctl.services.drill import default_record_dir
from ctl.services.drill_load import longest_gap, multi_host_dsn
from tests.unit.test_operations_cli import AFTER, OPTIME, ScriptedDcs, cluster, members_api, member, run

# ------------------------------------------------------------------------------------------------------ plan


def lagging_api(seen: list | None = None):
    body = {"state": "running", "role": "replica", "replication_state": "streaming",
            "xlog": {"received_location": OPTIME - 17 * 1048576, "replayed_location": OPTIME - 17 * 1048576}}
    return members_api({("node3", "GET", "/patroni"): httpx.Response(200, json=body)}, seen)


def test_plan_json_and_exit_codes() -> None:
    r = run(["plan", "switchover", "-f", "json"], ScriptedDcs(cluster()), lagging_api())
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["chosen"] == "node2" and doc["leader"] == "node1"
    node3 = next(m for m in doc["members"] if m["member"] == "node3")
    assert node3["reasons"] == ["lags 17.0 MB behind (maximum_lag_on_failover 1.0 MB)"]
    r = run(["plan", "switchover", "--candidate", "node3"], ScriptedDcs(cluster()), lagging_api())
    assert r.exit_code == ExitCode.REFUSED
    assert "Refused: node3 lags 17.0 MB behind (maximum_lag_on_failover 1.0 MB)" in r.stdout
    assert "| Member" in r.stdout and "| Eligible" in r.stdout
    assert run(["plan", "sideways"], ScriptedDcs(cluster())).exit_code == ExitCode.USAGE


def test_a_refused_switchover_prints_the_plans_reasons_and_sends_nothing() -> None:
    seen: list = []
    r = run(["switchover", "--candidate", "node3", "--force"], ScriptedDcs(cluster()), lagging_api(seen))
    assert r.exit_code == ExitCode.REFUSED
    plan = json.loads(run(["plan", "switchover", "--candidate", "node3", "-f", "json"], ScriptedDcs(cluster()),
                          lagging_api()).stdout)
    reason = next(m for m in plan["members"] if m["member"] == "node3")["reasons"][0]
    assert f"node3: {reason}" in r.stderr
    assert not [s for s in seen if s[0][1] == "POST"]


def test_plan_switchover_without_leader_is_refused_and_failover_is_planned() -> None:
    leaderless = cluster(None)
    r = run(["plan", "switchover", "-f", "json"], ScriptedDcs(leaderless))
    assert r.exit_code == ExitCode.REFUSED and json.loads(r.stdout)["chosen"] is None
    r = run(["plan", "failover", "-f", "json"], ScriptedDcs(leaderless))
    assert r.exit_code == 0 and json.loads(r.stdout)["chosen"] in ("node1", "node2", "node3")


# ----------------------------------------------------------------------------------------------------- audit


def test_every_changing_command_records_reason_result_and_redacted_args() -> None:
    dcs = ScriptedDcs(cluster(), AFTER)
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text="ok")})
    r = run(["switchover", "--candidate", "node2", "--force", "--reason", "CHG-1"], dcs, rest)
    assert r.exit_code == 0, r.stderr
    (key, value), = dcs.audit_entries.items()
    assert key.startswith("/service/demo/hactl/audit/")
    e = layout.decode(key.rsplit("/", 1)[1], value)
    assert e.command == "switchover" and e.reason == "CHG-1" and e.exit_code == 0 and e.source == "hactl"
    assert e.args["candidate"] == "node2" and e.args["force"] is True and e.result.startswith("succeeded")
    assert e.user and e.host and e.duration_s is not None
    # a refusal is recorded with its exit code
    dcs = ScriptedDcs(cluster())
    r = run(["switchover", "--candidate", "nosuch", "--force", "--reason", "oops"], dcs)
    assert r.exit_code == ExitCode.REFUSED
    (e,) = [layout.decode(k.rsplit("/", 1)[1], v) for k, v in dcs.audit_entries.items()]
    assert e.exit_code == ExitCode.REFUSED and "nosuch" in e.result and e.reason == "oops"


def test_reason_is_accepted_by_every_changing_command() -> None:
    from typer.main import get_command

    from ctl.cli.app import _load_plugins, app

    _load_plugins()
    group = get_command(app)
    for name in ("switchover", "failover", "restart", "reload", "reinit", "pause", "resume", "edit-config",
                 "flush", "remove", "drill", "demote-cluster", "promote-cluster"):
        assert "--reason" in [o for p in group.commands[name].params for o in p.opts], name
    for name in ("list", "plan", "check", "audit", "query"):
        assert "--reason" not in [o for p in group.commands[name].params for o in p.opts], name


def test_redaction() -> None:
    args = {"password": "hunter2", "dsn": "host=x password=s3cret user=u", "url": "postgres://u:pw@h/db",
            "pgpass_file": "/x", "nested": {"api_key": "k"}, "candidate": "node2", "flag": False}
    red = layout.redact(args)
    assert red["password"] == "***" and "s3cret" not in red["dsn"] and "pw@" not in red["url"]
    assert red["nested"]["api_key"] == "***" and red["candidate"] == "node2" and red["flag"] is False
    assert layout.redact("x" * 2000).endswith("...") and len(layout.redact("x" * 2000)) < 600


def test_ids_sort_by_time_and_trim_keeps_the_newest() -> None:
    a = layout.new_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    b = layout.new_id(datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc))
    assert a < b and a.startswith("20260102T030405")
    dcs = ScriptedDcs(cluster())
    for i in range(7):
        entry = layout.AuditEntry(time=f"t{i}", command="pause", reason=str(i))
        asvc.append(dcs, "/service/", "demo", entry, keep=5)
    trail = asvc.read(dcs, "/service/", "demo")
    assert [e.reason for e in trail] == ["2", "3", "4", "5", "6"]
    assert [e.reason for e in asvc.read(dcs, "/service/", "demo", last=2)] == ["5", "6"]


def test_audit_command_shows_newest_last() -> None:
    dcs = ScriptedDcs(cluster())
    for i in range(3):
        asvc.append(dcs, "/service/", "demo", layout.AuditEntry(time=f"2026-01-0{i + 1}", command="pause",
                                                                user="ops", host="h", reason=f"r{i}"))
    r = run(["audit", "-n", "2", "-f", "json"], dcs)
    assert r.exit_code == 0 and [e["reason"] for e in json.loads(r.stdout)] == ["r1", "r2"]
    r = run(["audit"], dcs)
    assert r.stdout.index("r0") < r.stdout.index("r2") and "ops@h" in r.stdout


def test_cluster_decoding_ignores_the_audit_subtree() -> None:
    kvs = [KeyValue("/service/demo/leader", "node1"), KeyValue("/service/demo/members/node1", "{}"),
           KeyValue("/service/demo/hactl/audit/20260101T000000.000000Z-abc", '{"command": "pause"}')]
    c = parse_cluster("demo", "/service/demo/", kvs)
    assert [m.name for m in c.members] == ["node1"] and c.leader.name == "node1" and c.failover is None


def test_the_agent_ignores_audit_writes_in_its_watch() -> None:
    from ctl.agent.loop import Agent

    assert Agent.relevant_event(object.__new__(Agent), False, "hactl/audit/x", "{}") is False


# -------------------------------------------------------------------------------------------------- list --all


def test_list_all_is_one_document_with_a_cluster_column() -> None:
    other = Cluster("other", initialize="1", members=(Member("solo", conn_url="postgres://10.0.0.9:5432/postgres",
                                                             state="running", role="primary"),))
    clusters = [cluster(), other]
    rows = json.loads(render_tools.render_list_all(clusters, "json"))
    assert [(r["Cluster"], r["Member"]) for r in rows] == [("demo", "node1"), ("demo", "node2"), ("demo", "node3"),
                                                           ("other", "solo")]
    assert yaml.safe_load(render_tools.render_list_all(clusters, "yaml")) == rows
    tsv = render_tools.render_list_all(clusters, "tsv").splitlines()
    assert tsv[0].startswith("Cluster\tMember\tHost") and len(tsv) == 5
    pretty = render_tools.render_list_all(clusters, "pretty", title="Namespace: /service/")
    assert pretty.startswith("+ Namespace: /service/") and "| Cluster |" in pretty.replace("  ", " ")
    assert render_tools.render_list_all([], "json") == "[]\n"


def test_list_all_reads_once_and_rejects_names() -> None:
    class AllDcs(ScriptedDcs):
        calls = 0

        def get_all_clusters(self, namespace: str) -> list[Cluster]:
            AllDcs.calls += 1
            return [cluster()]

    r = run(["list", "--all", "-f", "json"], AllDcs(cluster()))
    assert r.exit_code == 0 and AllDcs.calls == 1 and len(json.loads(r.stdout)) == 3
    assert run(["list", "--all", "demo"], AllDcs(cluster())).exit_code == ExitCode.USAGE


# ------------------------------------------------------------------------------------------------------- drill


def test_drill_refuses_without_force_off_a_terminal() -> None:
    r = run(["drill", "switchover"], ScriptedDcs(cluster()))
    assert r.exit_code == ExitCode.ABORTED and "--force" in r.stderr


def test_drill_figures() -> None:
    assert longest_gap([1.0, 1.1, 2.5, 2.6], 0.9, 3.0) == 1.4
    assert longest_gap([], 0.0, 2.0) == 2.0
    members = [member("node1", "primary"), member("node2")]
    dsn = multi_host_dsn(members, "postgres", "pw")
    assert dsn["host"] == "127.0.0.1,127.0.0.1" and dsn["port"] == "5433,5434"
    assert dsn["target_session_attrs"] == "read-write" and dsn["password"] == "pw"
    assert default_record_dir({"XDG_STATE_HOME": "/s"}) == "/s/hactl/drills"
    assert default_record_dir({"HOME": "/h"}).endswith("/.local/state/hactl/drills")
