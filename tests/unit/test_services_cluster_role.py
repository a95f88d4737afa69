"""promote-cluster / demote-cluster as services: patronictl's refusals, the PATCH body, the wait and its end."""

from __future__ import annotations

import pytest

from ctl.errors import Refused, RestError, UsageError
from ctl.model import Cluster, DynamicConfig, Leader, Member
from ctl.restclient import RestAnswer
from ctl.services import cluster_role as svc


def cluster(leader_role: str | None = "primary", leader_state: str = "running", standby: bool = False) -> Cluster:
    data = {"standby_cluster": {"host": "10.0.0.9", "port": 5432}} if standby else {}
    members = (Member("node1", api_url="http://127.0.0.1:8008/patroni", role=leader_role, state=leader_state),
               Member("node2", api_url="http://127.0.0.1:8009/patroni", role="replica", state="running"))
    return Cluster(scope="dr", config=DynamicConfig(data, mod_revision=3),
                   leader=Leader("node1") if leader_role else None, members=members)


class Rest:
    def __init__(self, status: int = 200, error: bool = False) -> None:
        self.status, self.error, self.calls = status, error, []

    def patch_config(self, member, patch):
        self.calls.append((member.name, patch))
        if self.error:
            raise RestError("connection refused")
        return RestAnswer(self.status, "nope" if self.status != 200 else "{}")


class Dcs:
    def __init__(self, *snapshots: Cluster) -> None:
        self.snapshots = list(snapshots)

    def get_cluster(self, namespace, scope):
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_demote_needs_a_host_port_or_restore_command():
    with pytest.raises(UsageError, match="At least --host, --port or --restore-command should be specified"):
        svc.plan_demote(cluster(), host=None, port=None, restore_command=None, primary_slot_name="s")


def test_refusals_as_patronictl():
    with pytest.raises(Refused, match="Cluster has no leader, demotion is not possible"):
        svc.plan_demote(cluster(None), host="h", port=None, restore_command=None, primary_slot_name=None)
    with pytest.raises(Refused, match="Cluster is already in the required state"):
        svc.plan_demote(cluster("standby_leader", standby=True), host="h", port=1, restore_command=None,
                        primary_slot_name=None)
    with pytest.raises(Refused, match="Cluster is already in the required state"):
        svc.plan_promote(cluster("primary"))
    with pytest.raises(Refused, match="promotion is not possible"):
        svc.plan_promote(cluster(None))


def test_demote_patches_the_section_and_waits_for_a_running_standby_leader():
    plan = svc.plan_demote(cluster(), host="10.0.0.9", port=5433, restore_command=None, primary_slot_name="dr")
    assert plan.patch == {"standby_cluster": {"host": "10.0.0.9", "port": 5433, "primary_slot_name": "dr"}}
    rest, clock, lines = Rest(), Clock(), []
    dcs = Dcs(cluster("primary", "stopping", standby=True), cluster("standby_leader", "starting", standby=True),
              cluster("standby_leader", "running", standby=True))
    result = svc.execute(plan, cluster(), rest, dcs, "/service/", timeout=60, progress=lines.append,
                         clock=clock, sleep=clock.sleep)
    assert result.ok and result.outcome == "succeeded"
    assert rest.calls == [("node1", plan.patch)]
    assert lines[0].endswith("cluster is unlocked: False, leader role: primary, leader state: stopping")
    assert lines[-1].endswith("cluster is successfully demoted")


def test_promote_sends_null_and_times_out_with_what_it_saw():
    plan = svc.plan_promote(cluster("standby_leader", standby=True))
    assert plan.patch == {"standby_cluster": None}
    clock = Clock()
    result = svc.execute(plan, cluster(), Rest(), Dcs(cluster("standby_leader", standby=True)), "/service/",
                         timeout=5, clock=clock, sleep=clock.sleep)
    assert result.outcome == "timeout" and not result.ok
    assert "leader role: standby_leader" in result.message


def test_a_refused_patch_is_reported_with_the_status_and_body():
    plan = svc.plan_promote(cluster("standby_leader", standby=True))
    result = svc.execute(plan, cluster(), Rest(status=500), Dcs(cluster()), "/service/", timeout=5)
    assert result.outcome == "failed"
    assert result.message == "Failed to promote dr cluster: /config PATCH status code=500, (nope)"
    result = svc.execute(plan, cluster(), Rest(error=True), Dcs(cluster()), "/service/", timeout=5)
    assert result.outcome == "unreachable"


def test_cli_demote_without_a_target_fails_before_etcd_is_read():
    from typer.testing import CliRunner

    from ctl.cli.app import app

    r = CliRunner().invoke(app, ["demote-cluster", "demo"], env={})
    assert r.exit_code == 2
    assert "Error: At least --host, --port or --restore-command should be specified" in r.output
