"""Operation commands: pure plans (candidates, schedules, role filters), prompts without a terminal, execution
against a scripted DCS and httpx.MockTransport members, result rendering and exit codes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest
from typer.testing import CliRunner

from ctl import render_operations as rops
from ctl.cli.app import app
from ctl.config import build
from tests.unit.audit_store import AuditStore
from ctl.errors import CasFailed, ExitCode, NotFound, Refused, RestError, UsageError
from ctl.model import Cluster, DynamicConfig, Failover, Leader, Member, Status, SyncState
from ctl.restclient import RestClient
from ctl.services import maintenance as msvc
from ctl.services import operations as osvc
from ctl.services.query import QueryResult, read_sql
from ctl.services.results import OperationResult

CONFIG = build({"scope": "demo", "etcd3": {"hosts": ["127.0.0.1:2379"]}}, "test.yml")
PORTS = {"node1": 8008, "node2": 8009, "node3": 8010}
OPTIME = 100_000_000


def member(name: str, role: str = "replica", state: str = "running", lsn: int | None = OPTIME,
           tags: dict | None = None, **extra: Any) -> Member:
    data = {"role": role, "state": state}
    if role == "replica" and state == "running":
        extra.setdefault("replication_state", "streaming")
    return Member(name, conn_url=f"postgres://127.0.0.1:{5433 + list(PORTS).index(name)}/postgres",
                  api_url=f"http://127.0.0.1:{PORTS[name]}/patroni", state=state, role=role,
                  receive_lsn=lsn if role == "replica" else None, replay_lsn=lsn if role == "replica" else None,
                  xlog_location=lsn, timeline=1, tags=tags or {}, data=data, **extra)


def cluster(leader: str | None = "node1", *, members: tuple[Member, ...] | None = None, paused: bool = False,
            sync: tuple[str, ...] | None = None, failover: Failover | None = None) -> Cluster:
    cfg: dict[str, Any] = {"ttl": 30, "loop_wait": 10, "maximum_lag_on_failover": 1048576}
    if paused:
        cfg["pause"] = True
    if sync is not None:
        cfg["synchronous_mode"] = True
    if members is None:
        members = tuple(member(n, "primary" if n == leader else "replica") for n in PORTS)
    return Cluster("demo", initialize="7712146500642140331", config=DynamicConfig(cfg, mod_revision=5),
                   leader=Leader(leader, mod_revision=8) if leader else None, members=members, failover=failover,
                   sync=SyncState(leader, sync, mod_revision=9) if sync is not None else None,
                   status=Status(optime=OPTIME), revision=20)


class ScriptedDcs(AuditStore):
    """get_cluster returns the next snapshot of a script (the last one repeats); puts are recorded."""

    def __init__(self, *snapshots: Cluster, put_error: Exception | None = None) -> None:
        self.snapshots = list(snapshots)
        self.puts: list[tuple[str, str, dict]] = []
        self.put_error = put_error
        self.deleted: list[str] = []

    def get_cluster(self, namespace: str, scope: str) -> Cluster:
        if len(self.snapshots) > 1:
            return self.snapshots.pop(0)
        return self.snapshots[0]

    def list_clusters(self, namespace: str) -> list[str]:
        return ["demo"]

    def put(self, key: str, value: str, **kw: Any) -> int:
        if self.audit_put(key, value):
            return 1
        self.puts.append((key, value, kw))
        if self.put_error:
            error, self.put_error = self.put_error, None
            raise error
        return 1

    def delete_prefix(self, prefix: str) -> int:
        self.deleted.append(prefix)
        self.snapshots = [Cluster("demo")]
        return 7

    def close(self) -> None:
        pass


Handler = Callable[[httpx.Request], httpx.Response]


def members_api(routes: dict[tuple[str, str, str], Any], seen: list | None = None) -> RestClient:
    """routes: (node, method, path) -> Response, or an exception to raise; GET /patroni defaults to a running
    replica status."""
    by_port = {v: k for k, v in PORTS.items()}

    def handler(request: httpx.Request) -> httpx.Response:
        node = by_port[request.url.port]
        key = (node, request.method, request.url.path)
        if seen is not None:
            seen.append((key, json.loads(request.content) if request.content else None))
        answer = routes.get(key)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        if answer is not None:
            return answer
        if key[1:] == ("GET", "/patroni"):
            return httpx.Response(200, json={"state": "running", "role": "replica", "replication_state": "streaming",
                                             "xlog": {"received_location": OPTIME, "replayed_location": OPTIME},
                                             "postmaster_start_time": "t0"})
        if key[1:] == ("GET", "/primary"):
            return httpx.Response(200 if node == "node2" else 503, json={})
        return httpx.Response(404, text="not routed in the test")

    return RestClient(CONFIG, transport=httpx.MockTransport(handler))


def run(args: list[str], dcs: ScriptedDcs, rest: RestClient | None = None, stdin: str | None = None):
    return CliRunner().invoke(app, args, obj={"config": CONFIG, "dcs": dcs, "rest": rest or members_api({})},
                              input=stdin, env={})


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


AFTER = cluster("node2", members=(member("node1", "replica"), member("node2", "primary"), member("node3")))


# ----------------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("kwargs,needle", [
    ({"leader": "node2", "candidate": "node3"}, "Member node2 is not the leader of cluster demo"),
    ({"leader": None, "candidate": "node9"}, "Member node9 does not exist in cluster demo or is tagged as nofailover"),
    ({"leader": None, "candidate": "node1"}, "Member node1 is already the leader of cluster demo"),
])
def test_plan_switchover_refusals(kwargs: dict, needle: str) -> None:
    with pytest.raises(Refused, match=needle):
        osvc.plan_switchover(cluster(), kwargs["leader"], kwargs["candidate"])


def test_plan_switchover_nofailover_no_leader_sync_and_pause_rules() -> None:
    tagged = cluster(members=(member("node1", "primary"), member("node2", tags={"nofailover": True}),
                              member("node3", tags={"failover_priority": 0})))
    with pytest.raises(Refused, match="No candidates found"):
        osvc.plan_switchover(tagged, None, None)
    assert osvc.switchover_candidates(cluster()) == ["node2", "node3"]
    with pytest.raises(Refused, match="has no leader"):
        osvc.plan_switchover(cluster(None), None, "node2")
    with pytest.raises(Refused, match="not a synchronous standby"):
        osvc.plan_switchover(cluster(sync=("node3",)), None, "node2")
    assert osvc.plan_switchover(cluster(sync=("node3",)), None, "node3").candidate == "node3"
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(Refused, match="Can't schedule switchover in the paused state"):
        osvc.plan_switchover(cluster(paused=True), None, "node2", later)
    with pytest.raises(Refused, match="only to a specific candidate in a paused state"):
        osvc.plan_switchover(cluster(paused=True), None, None)
    plan = osvc.plan_switchover(cluster(), "node1", "node2", later)
    assert plan.requested()["scheduled_at"] == later.isoformat() and plan.leader == "node1"


def test_plan_failover_needs_a_candidate_and_works_without_a_leader() -> None:
    with pytest.raises(UsageError, match="Failover could be performed only to a specific candidate"):
        osvc.plan_failover(cluster(), None)
    plan = osvc.plan_failover(cluster(None), "node3")
    assert (plan.action, plan.leader, plan.candidate) == ("failover", None, "node3")
    assert osvc.is_async_candidate(cluster(sync=("node3",)), "node2")
    assert not osvc.is_async_candidate(cluster(), "node2")


def test_parse_schedule() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert osvc.parse_schedule(None) is None and osvc.parse_schedule("now") is None and osvc.parse_schedule("") is None
    assert osvc.parse_schedule("2030-01-01T13:00Z", now) == datetime(2030, 1, 1, 13, 0, tzinfo=timezone.utc)
    naive = osvc.parse_schedule("2031-01-01T13:00", now)
    assert naive is not None and naive.tzinfo is not None  # local time zone, as patronictl
    with pytest.raises(UsageError, match=r"Unable to parse scheduled timestamp \(tomorrow\)"):
        osvc.parse_schedule("tomorrow", now)
    with pytest.raises(UsageError, match="in the past"):
        osvc.parse_schedule("2029-01-01T00:00+00:00", now)


def status(lag: int = 0, **extra: Any) -> dict:
    body = {"state": "running", "replication_state": "streaming",
            "xlog": {"received_location": OPTIME - lag, "replayed_location": OPTIME - lag}}
    body.update(extra)
    return body


def test_choose_candidate_least_lag_and_reasons() -> None:
    c = cluster()
    choice = osvc.choose_candidate(c, {"node2": status(500), "node3": status(0)})
    assert choice.name == "node3" and "lag 0 bytes" in choice.reason and "healthiest of 2 eligible" in choice.reason
    choice = osvc.choose_candidate(c, {"node2": status(0), "node3": RestError("connection refused")})
    assert choice.name == "node2" and "node3: does not answer on its REST API" in choice.reason
    with pytest.raises(Refused) as exc:
        osvc.choose_candidate(c, {"node2": status(5 * 1024 * 1024), "node3": status(0, state="stopped")})
    assert "node2: lags 5.0 MB behind (maximum_lag_on_failover 1.0 MB)" in exc.value.message
    assert "node3: does not run PostgreSQL" in exc.value.message
    tagged = cluster(members=(member("node1", "primary"), member("node2", tags={"nofailover": True}), member("node3")))
    assert osvc.choose_candidate(tagged, {"node2": status(), "node3": status(10)}).name == "node3"
    assert osvc.choose_candidate(cluster(), {"node2": status(tags={"nofailover": True}), "node3": status(9)}
                                 ).name == "node3"
    # synchronous mode: only a sync standby, even when an async one is ahead
    sync = cluster(sync=("node2",))
    choice = osvc.choose_candidate(sync, {"node2": status(100), "node3": status(0)})
    assert choice.name == "node2" and "node3: is not a synchronous standby" in choice.reason


def test_select_members_role_filters_and_errors() -> None:
    c = cluster()
    assert [m.name for m in msvc.select_members(c, [], "replica")] == ["node2", "node3"]
    assert [m.name for m in msvc.select_members(c, [], "leader")] == ["node1"]
    assert [m.name for m in msvc.select_members(c, [], "primary")] == ["node1"]
    assert [m.name for m in msvc.select_members(c, ["node1", "node3"], "any")] == ["node1", "node3"]
    with pytest.raises(NotFound, match="No replica among provided members"):
        msvc.select_members(c, ["node1"], "replica")
    with pytest.raises(NotFound, match="node7 is not a member of cluster demo"):
        msvc.select_members(c, ["node7"])
    with pytest.raises(UsageError, match="unknown role"):
        msvc.select_members(c, [], "boss")
    with pytest.raises(NotFound, match="doesn't have any members"):
        msvc.select_members(Cluster("demo"), [])


def test_plan_restart() -> None:
    c = cluster(members=(member("node1", "primary", pending_restart=True), member("node2"),
                         member("node3", pending_restart=True)))
    plan = msvc.plan_restart(c, [], "any", pending=True, pg_version="15.4", timeout=30)
    assert plan.members == ("node1", "node3")
    assert plan.conditions == {"restart_pending": True, "postgres_version": "15.4", "timeout": "30"}
    assert msvc.plan_restart(c, [], "any", any_member=True, pick=lambda ms: ms[-1]).members == ("node3",)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert msvc.plan_restart(c, [], "replica", pending=True, scheduled_at=later).members == ("node2", "node3")
    with pytest.raises(Refused, match="Can't schedule restart in the paused state"):
        msvc.plan_restart(cluster(paused=True), [], scheduled_at=later)
    with pytest.raises(UsageError, match="Invalid PostgreSQL version"):
        msvc.plan_restart(c, [], pg_version="9.6")
    one = msvc.plan_restart(c, [], "any", any_member=True, pick=lambda ms: ms[0])
    assert msvc.with_pg_version(one, "16.1").members == ("node1",)
    assert msvc.with_pg_version(one, "16.1").conditions == {"postgres_version": "16.1"}


# ----------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("args,flag", [
    (["switchover"], "--force"),
    (["switchover", "--candidate", "node2", "--scheduled", "now"], "--force"),
    (["failover"], "--candidate"),
    (["restart", "demo"], "--force"),
    (["reload", "demo"], "--force"),
    (["flush", "demo", "restart"], "--force"),
    (["remove", "demo"], "--yes-i-am-aware"),
])
def test_a_prompt_without_a_terminal_fails_at_once_naming_the_flag(args: list[str], flag: str) -> None:
    seen: list = []
    r = run(args, ScriptedDcs(cluster()), members_api({}, seen))
    assert r.exit_code == ExitCode.ABORTED, (r.stdout, r.stderr)
    assert "stdin is not a terminal" in r.stderr and flag in r.stderr
    assert not [s for s in seen if s[0][1] != "GET"]  # nothing was sent


def test_remove_for_scripts_needs_the_leader_name_too() -> None:
    dcs = ScriptedDcs(cluster())
    r = run(["remove", "demo", "--yes-i-am-aware"], dcs)
    assert r.exit_code == ExitCode.ABORTED and "--leader NAME" in r.stderr and not dcs.deleted
    r = run(["remove", "demo", "--yes-i-am-aware", "--leader", "node2"], dcs)
    assert r.exit_code == ExitCode.REFUSED and not dcs.deleted
    r = run(["remove", "demo", "--yes-i-am-aware", "--leader", "node1"], dcs)
    assert r.exit_code == 0 and dcs.deleted == ["/service/demo/"] and "7 keys deleted" in r.stdout


# ----------------------------------------------------------------------------------------------- switchover


def test_switchover_verified_prints_before_and_fresh_after_tables() -> None:
    seen: list = []
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text='Successfully switched over to '
                                                                                   '"node2"')}, seen)
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(cluster(), AFTER), rest)
    assert r.exit_code == 0, r.stderr
    assert [s for s in seen if s[0][1] == "POST"][0] == (("node1", "POST", "/switchover"),
                                                         {"leader": "node1", "candidate": "node2"})
    lines = r.stdout.splitlines()
    assert lines[0] == "Current cluster topology"
    assert lines[1].startswith("+ Cluster: demo (7712146500642140331) ")
    assert lines[4].startswith("| node1  ") and "| Leader  |" in lines[4]
    done = next(i for i, ln in enumerate(lines) if ln.endswith('Successfully switched over to "node2" (node1: '
                                                                 'streaming)'))
    assert lines[done][4] == "-" and lines[done][10] == " " and len(lines[done].split(" ", 2)[1]) == 14
    assert lines[done + 1].startswith("verified in ")
    assert any(ln.startswith("| node2 ") and "| Leader " in ln for ln in lines[done + 2:])


def test_switchover_json_result_object() -> None:
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text="ok")})
    r = run(["switchover", "--candidate", "node2", "--force", "-f", "json"], ScriptedDcs(cluster(), AFTER), rest)
    assert r.exit_code == 0
    result = json.loads(r.stdout)
    assert result["requested"] == {"action": "switchover", "cluster": "demo", "leader": "node1",
                                   "candidate": "node2", "scheduled_at": None, "http_status": 200}
    assert result["outcome"] == "succeeded" and result["exit_code"] == 0
    assert result["final_roles"]["node2"]["role"] == "leader"
    assert result["final_roles"]["node1"] == {"role": "replica", "state": "streaming", "timeline": 1,
                                              "lag_bytes": 0}
    assert set(result["timings"]) >= {"request", "new_leader_locked", "new_leader_writable", "total"}


def test_switchover_force_without_candidate_chooses_and_says_why() -> None:
    seen: list = []
    rest = members_api({("node3", "GET", "/patroni"): httpx.Response(200, json=status(4096)),
                        ("node1", "POST", "/switchover"): httpx.Response(200, text="ok")}, seen)
    r = run(["switchover", "--force"], ScriptedDcs(cluster(), AFTER), rest)
    assert r.exit_code == 0, r.stderr
    assert "Candidate: node2 (chosen by hactl: the healthiest of 2 eligible members, lag 0 bytes" \
        in r.stdout
    assert [body for key, body in seen if key[1] == "POST"] == [{"leader": "node1", "candidate": "node2"}]


@pytest.mark.parametrize("status_code,text,code", [
    (412, "candidate does not exists", ExitCode.REFUSED),
    (400, "Switchover could be performed only from a specific leader", ExitCode.REFUSED),
    (401, "no auth header received", ExitCode.REFUSED),
    (503, "Switchover failed: node2: lags 9999 bytes", ExitCode.FAILED),
    (500, "boom", ExitCode.FAILED),
])
def test_switchover_answers_map_to_exit_codes(status_code: int, text: str, code: ExitCode) -> None:
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(status_code, text=text)})
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(cluster()), rest)
    assert r.exit_code == code, r.stderr
    assert r.stderr.startswith("Error: Switchover ") and text in r.stderr
    assert "Successfully" not in r.stdout


def test_switchover_status_unknown_is_verified_and_times_out_honestly() -> None:
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(
        503, text="Switchover status unknown after 30 seconds; operation may still be in progress")})
    pending = cluster(failover=Failover("node1", "node2", mod_revision=30))
    r = run(["switchover", "--candidate", "node2", "--force", "--timeout", "0.6", "-f", "json"],
            ScriptedDcs(pending), rest)
    assert r.exit_code == ExitCode.TIMEOUT, r.stderr
    assert json.loads(r.stdout)["outcome"] == "timeout"
    assert "not verified within 1s: node1 still holds the leader lock (failover key pending)" in r.stderr
    # ... and succeeds when the change shows up in the DCS after all
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(503, text="Switchover status unknown")})
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(pending, pending, AFTER), rest)
    assert r.exit_code == 0, r.stderr


def test_switchover_refused_by_the_ha_loop_is_a_failure() -> None:
    rest = members_api({("node1", "POST", "/switchover"): httpx.ReadTimeout("timed out")})
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(cluster()), rest)
    assert r.exit_code == ExitCode.FAILED
    assert "no answer from node1's REST API" in r.stdout
    assert "the failover key was cleared and node1 still holds the leader lock" in r.stderr


def test_switchover_to_another_member_than_asked_is_a_failure() -> None:
    other = cluster("node3", members=(member("node1"), member("node2"), member("node3", "primary")))
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text="ok")})
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(cluster(), other), rest)
    assert r.exit_code == ExitCode.FAILED and 'node3 took over instead of the requested candidate "node2"' in r.stderr


def test_leader_rest_unreachable_falls_back_to_the_failover_key_with_cas_and_verifies() -> None:
    rest = members_api({("node1", "POST", "/failover"): refused()})
    before = cluster(failover=Failover(mod_revision=44))
    dcs = ScriptedDcs(before, before, AFTER, put_error=CasFailed("changed"))
    r = run(["failover", "--candidate", "node2", "--force", "-f", "json"], dcs, rest)
    assert r.exit_code == 0, r.stderr
    assert "falling back to DCS" in r.stderr
    assert [(k, json.loads(v), kw) for k, v, kw in dcs.puts] == [
        ("/service/demo/failover", {"member": "node2"}, {"mod_revision": 44}),
        ("/service/demo/failover", {"member": "node2"}, {"mod_revision": 44}),  # re-read after the lost race
    ]
    result = json.loads(r.stdout)
    assert result["outcome"] == "succeeded" and "falling back to DCS" in result["notes"][0]
    # no failover key yet: create-only
    dcs = ScriptedDcs(cluster(), AFTER)
    r = run(["switchover", "--candidate", "node2", "--force"], dcs, members_api({("node1", "POST", "/switchover"):
                                                                                 refused()}))
    assert r.exit_code == 0 and dcs.puts[0][2] == {"create": True}
    assert json.loads(dcs.puts[0][1]) == {"leader": "node1", "member": "node2"}


def test_scheduled_switchover_is_checked_in_the_failover_key() -> None:
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    scheduled = cluster(failover=Failover("node1", "node2", later, mod_revision=50))
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(202, text="Switchover scheduled")})
    r = run(["switchover", "--candidate", "node2", "--scheduled", later, "--force"], ScriptedDcs(cluster(), scheduled),
            rest)
    assert r.exit_code == 0 and "Switchover scheduled at" in r.stdout
    r = run(["switchover", "--candidate", "node2", "--scheduled", later, "--force"], ScriptedDcs(cluster()), rest)
    assert r.exit_code == ExitCode.FAILED and "does not hold the scheduled switchover" in r.stderr


def test_failover_validation_errors() -> None:
    r = run(["failover", "--force"], ScriptedDcs(cluster()))
    assert r.exit_code == ExitCode.USAGE and "only to a specific candidate" in r.stderr
    r = run(["failover", "--candidate", "node1", "--force", "-f", "json"], ScriptedDcs(cluster()))
    assert r.exit_code == ExitCode.REFUSED and json.loads(r.stdout)["outcome"] == "refused"


# ----------------------------------------------------------------------------------------------- other commands


def test_restart_checks_the_new_postmaster_and_reports_each_member() -> None:
    starts = {"node1": iter(["a", "b"]), "node2": iter(["a", "a", "a"]), "node3": iter(["a", "c"])}

    def patroni(node: str) -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: httpx.Response(200, json={"state": "running",
                                                         "postmaster_start_time": next(starts[node], "a")})

    routes: dict = {(n, "GET", "/patroni"): patroni(n) for n in PORTS}
    routes[("node1", "POST", "/restart")] = httpx.Response(200, text="restarted successfully")
    routes[("node2", "POST", "/restart")] = httpx.Response(200, text="restarted successfully")
    routes[("node3", "POST", "/restart")] = httpx.Response(503, text="restart conditions are not satisfied")
    c = cluster()
    plan = msvc.plan_restart(c, [], "any")
    ticks = iter(range(1000))
    result = msvc.execute_restart(plan, c, members_api(routes), ScriptedDcs(c), "/service/",
                                  clock=lambda: float(next(ticks)), sleep=lambda s: None)
    outcomes = {m.member: m.outcome for m in result.members}
    assert outcomes == {"node1": "succeeded", "node2": "failed", "node3": "refused"}
    assert result.exit_code == ExitCode.FAILED and "2 of 3 members" in result.message
    # with a condition (--pg-version, --pending), "not satisfied" is the asked-for result, not a refusal
    plan = msvc.plan_restart(c, ["node3"], "any", pg_version="15.2")
    result = msvc.execute_restart(plan, c, members_api(routes), ScriptedDcs(c), "/service/",
                                  clock=lambda: float(next(ticks)), sleep=lambda s: None)
    assert result.members[0].outcome == "nothing to do" and result.exit_code == 0


def test_restart_cli_scheduled_and_json() -> None:
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    seen: list = []
    rest = members_api({("node2", "POST", "/restart"): httpx.Response(202, text="Restart scheduled")}, seen)
    r = run(["restart", "demo", "node2", "--scheduled", later, "--force", "-f", "json"], ScriptedDcs(cluster()), rest)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["members"] == [{"member": "node2", "outcome": "scheduled",
                                                "message": "restart scheduled on member node2", "status": 202,
                                                "seconds": json.loads(r.stdout)["members"][0]["seconds"]}]
    assert [b for k, b in seen if k[1] == "POST"] == [{"schedule": datetime.fromisoformat(later).isoformat()}]
    busy = httpx.Response(409, text="Another restart is already scheduled")
    rest = members_api({("node2", "POST", "/restart"): busy})
    r = run(["restart", "demo", "node2", "--scheduled", later, "--force"], ScriptedDcs(cluster()), rest)
    assert r.exit_code == ExitCode.REFUSED and "Failed: restart for member node2: another restart" in r.stdout


def test_reload_lines_and_an_unreachable_member() -> None:
    rest = members_api({("node1", "POST", "/reload"): httpx.Response(202, text="reload scheduled"),
                        ("node2", "POST", "/reload"): httpx.Response(202, text="reload scheduled"),
                        ("node3", "POST", "/reload"): refused()})
    r = run(["reload", "demo", "--force"], ScriptedDcs(cluster()), rest)
    assert "Reload request received for member node1 and will be processed within 10 seconds" in r.stdout
    assert "Failed: reload for member node3: http://127.0.0.1:8010/reload: connection refused" in r.stdout
    assert r.exit_code == ExitCode.REST_UNAVAILABLE


def test_pause_and_resume() -> None:
    seen: list = []
    rest = members_api({("node1", "PATCH", "/config"): refused(),
                        ("node2", "PATCH", "/config"): httpx.Response(200, json={"pause": True})}, seen)
    paused = cluster(paused=True)
    r = run(["pause"], ScriptedDcs(cluster(), paused), rest)
    assert r.exit_code == 0, r.stderr
    assert "Warning: Member node1 is not accessible" in r.stdout
    assert r.stdout.endswith("Success: cluster management is paused\n")
    assert [b for k, b in seen if k[1] == "PATCH"] == [{"pause": True}, {"pause": True}]
    r = run(["pause"], ScriptedDcs(paused))
    assert r.exit_code == ExitCode.REFUSED and r.stderr == "Error: Cluster is already paused\n"
    # the agent said 200 but etcd does not show it: not a success
    rest = members_api({("node1", "PATCH", "/config"): httpx.Response(200, json={})})
    r = run(["resume"], ScriptedDcs(paused), rest)
    assert r.exit_code == ExitCode.FAILED and "does not say pause: False" in r.stderr
    # --wait: members that never publish the pause flag -> timeout
    rest = members_api({("node1", "PATCH", "/config"): httpx.Response(200, json={})})
    r = run(["pause", "--wait", "--timeout", "0.3"], ScriptedDcs(cluster(), paused), rest)
    assert r.exit_code == ExitCode.TIMEOUT and "3 members didn't recognize the pause state" in r.stderr


def test_flush_switchover_falls_back_to_cas_when_no_member_answers() -> None:
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    scheduled = cluster(failover=Failover("node1", "node2", later, mod_revision=61))
    rest = members_api({(n, "DELETE", "/switchover"): refused() for n in PORTS})
    dcs = ScriptedDcs(scheduled, cluster(failover=Failover(mod_revision=62)))
    r = run(["flush", "demo", "switchover", "--force"], dcs, rest)
    assert r.exit_code == 0, r.stderr
    assert dcs.puts == [("/service/demo/failover", "{}", {"mod_revision": 61})]
    r = run(["flush", "demo", "switchover"], ScriptedDcs(cluster()))
    assert r.exit_code == 0 and "No pending scheduled switchover" in r.stdout


def test_flush_restart() -> None:
    c = cluster(members=(member("node1", "primary"), member("node2", scheduled_restart={"schedule": "x"}),
                         member("node3")))
    rest = members_api({("node2", "DELETE", "/restart"): httpx.Response(200, text="scheduled restart deleted")})
    r = run(["flush", "demo", "restart", "--force"], ScriptedDcs(c), rest)
    assert r.exit_code == 0, r.stderr
    assert "Success: flush scheduled restart for member node2" in r.stdout
    assert "No scheduled restart for member node3" in r.stdout
    r = run(["flush", "demo", "nothing", "--force"], ScriptedDcs(c), rest)
    assert r.exit_code == ExitCode.USAGE


def test_reinit_refuses_the_leader_and_waits_for_a_new_postmaster() -> None:
    starts = iter(["a", "a", "b"])
    states = iter(["running", "creating replica", "running"])
    rest = members_api({("node2", "POST", "/reinitialize"): httpx.Response(200, text="reinitialize started"),
                        ("node2", "GET", "/patroni"): lambda r: httpx.Response(
                            200, json={"state": next(states, "running"), "postmaster_start_time": next(starts, "b")})})
    c = cluster()
    lines: list[str] = []
    result = msvc.execute_reinit(c, ["node1", "node2"], rest, force=True, from_leader=False, wait=True, timeout=30,
                                 progress=lines.append, sleep=lambda s: None)
    assert {m.member: m.outcome for m in result.members} == {"node1": "refused", "node2": "succeeded"}
    assert lines[-1] == "Reinitialize is completed on: node2" and result.exit_code == ExitCode.REFUSED


def test_reinit_wait_shows_the_base_backups_progress_as_status_only() -> None:
    answers = iter([{"state": "running", "postmaster_start_time": "a"},
                    {"state": "creating replica", "basebackup": {"done_bytes": 50 << 20, "total_bytes": 200 << 20}},
                    {"state": "creating replica", "basebackup": {"done_bytes": 150 << 20, "total_bytes": 200 << 20}},
                    {"state": "running", "postmaster_start_time": "b"}])
    rest = members_api({("node2", "POST", "/reinitialize"): httpx.Response(200, text="reinitialize started"),
                        ("node2", "GET", "/patroni"): lambda r: httpx.Response(200, json=next(answers))})
    lines: list[str] = []
    shown: list[str] = []
    result = msvc.execute_reinit(cluster(), ["node2"], rest, force=True, from_leader=False, wait=True, timeout=30,
                                 progress=lines.append, status=shown.append, sleep=lambda s: None)
    assert result.ok
    assert shown == ["node2: creating replica 50.0/200.0 MB (25%)", "node2: creating replica 150.0/200.0 MB (75%)"]
    assert not any("MB" in line for line in lines)  # progress is never a line of the permanent output
    assert msvc.backup_progress({"done_bytes": 1}) is None and msvc.backup_progress(None) is None


# ----------------------------------------------------------------------------------------------- rendering


def test_timestamp_is_patronictls_format() -> None:
    assert rops.timestamped("x", datetime(2026, 11, 25, 16, 31, 44, 310456)) == "2026-11-25 16:31:44.31045 x\n"


def test_render_query_formats() -> None:
    result = QueryResult("node1", ["a", "b"], [(1, None), (2, "x")], "SELECT 2")
    assert rops.render_query(result, "tsv") == "a\tb\n1\t\n2\tx\n"
    assert rops.render_query(result, "tsv", ";") == "a;b\n1;\n2;x\n"
    assert json.loads(rops.render_query(result, "json")) == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
    assert rops.render_query(result, "csv") == "a,b\n1,\n2,x\n"
    assert rops.render_query(QueryResult("node1", status="INSERT 0 1")) == "INSERT 0 1\n"


def test_query_argument_rules() -> None:
    with pytest.raises(UsageError, match="mutually exclusive"):
        read_sql("select 1", "f.sql")
    with pytest.raises(UsageError, match="either --command or --file"):
        read_sql(None, None)
    r = run(["query", "-r", "replica", "-m", "node2", "-c", "select 1"], ScriptedDcs(cluster()))
    assert r.exit_code == ExitCode.USAGE


def test_result_exit_codes() -> None:
    for outcome, code in [("succeeded", 0), ("scheduled", 0), ("refused", 7), ("failed", 1), ("timeout", 8),
                          ("unknown", 9), ("unreachable", 10)]:
        assert OperationResult("x", {}, outcome).exit_code == code


def test_interactive_switchover_asks_patronictls_questions_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctl.cli import interaction

    monkeypatch.setattr(interaction, "interactive", lambda: True)  # CliRunner's stdin is no terminal
    seen: list = []
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text="ok")}, seen)
    r = run(["switchover"], ScriptedDcs(cluster(), AFTER), rest, stdin="\nnode2\n\ny\n")
    assert r.exit_code == 0, r.stderr
    asked = [r.stdout.index(q) for q in ("Primary [node1]: ", "Candidate ['node2', 'node3']: ",
                                         "When should the switchover take place (e.g. <now+1h as %Y-%m-%dT%H:%M> )",
                                         "Are you sure you want to switchover cluster demo, demoting current leader "
                                         "node1? [y/N]: ")]
    assert asked == sorted(asked)
    assert [b for k, b in seen if k[1] == "POST"] == [{"leader": "node1", "candidate": "node2"}]
    seen.clear()
    r = run(["switchover"], ScriptedDcs(cluster()), members_api({}, seen), stdin="\nnode3\n\nn\n")
    assert r.exit_code == ExitCode.ABORTED and "Aborting" in r.stderr
    assert not [s for s in seen if s[0][1] == "POST"]
    r = run(["failover"], ScriptedDcs(cluster(sync=("node3",))), members_api({}, seen), stdin="node2\nn\n")
    assert "Are you sure you want to failover to the asynchronous node node2?" in r.stdout
    assert r.exit_code == ExitCode.ABORTED


def test_interactive_restart_asks_when_confirms_then_asks_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctl.cli import interaction

    monkeypatch.setattr(interaction, "interactive", lambda: True)
    seen: list = []
    routes = {("node2", "POST", "/restart"): httpx.Response(200, text="restarted successfully")}
    starts = iter(["a", "b"])
    routes[("node2", "GET", "/patroni")] = lambda r: httpx.Response(200, json={"state": "running",
                                                                                "postmaster_start_time": next(starts,
                                                                                                              "b")})
    r = run(["restart", "demo", "node2"], ScriptedDcs(cluster()), members_api(routes, seen), stdin="\ny\n16.1\n")
    assert r.exit_code == 0, r.stdout + r.stderr
    asked = [r.stdout.index(q) for q in ("When should the restart take place (e.g. <now+1h>)  [now]: ",
                                         "Are you sure you want to restart members node2? [y/N]: ",
                                         "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) : ")]
    assert asked == sorted(asked)
    assert [b for k, b in seen if k[1] == "POST"] == [{"postgres_version": "16.1"}]
    assert "Success: restart on member node2" in r.stdout


def test_remove_with_running_agents_waits_a_loop_and_reports_keys_that_came_back() -> None:
    from ctl.services import control

    live = cluster(members=(member("node1", "primary", lease=7), member("node2", lease=8), member("node3", lease=9)))

    class Rewriting(ScriptedDcs):
        def delete_prefix(self, prefix: str) -> int:
            self.deleted.append(prefix)
            self.snapshots = [cluster(None, members=(member("node2", lease=8),))]
            return 9

    slept: list[float] = []
    result = control.execute_remove(live, Rewriting(live), "/service/", sleep=slept.append)
    assert slept == [5.0]  # loop_wait 10 + 1, at most 5 s
    assert result.exit_code == ExitCode.FAILED and "running agents wrote keys again (node2)" in result.message
    result = control.execute_remove(live, ScriptedDcs(live), "/service/", sleep=slept.append)
    assert result.ok and result.message == "removed cluster demo: 7 keys deleted"


def test_in_a_standby_cluster_the_new_leader_is_checked_with_standby_leader() -> None:
    def standby(c: Cluster) -> Cluster:
        from dataclasses import replace

        return replace(c, config=DynamicConfig({**c.config.data, "standby_cluster": {"host": "10.9.9.9"}}))

    after = standby(cluster("node2", members=(member("node1"), member("node2", "standby_leader"), member("node3"))))
    seen: list = []
    rest = members_api({("node1", "POST", "/switchover"): httpx.Response(200, text="ok"),
                        ("node2", "GET", "/standby-leader"): httpx.Response(200, json={})}, seen)
    r = run(["switchover", "--candidate", "node2", "--force"], ScriptedDcs(standby(cluster()), after), rest)
    assert r.exit_code == 0, r.stderr
    assert ("node2", "GET", "/standby-leader") in [k for k, _ in seen]
