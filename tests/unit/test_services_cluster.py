"""ctl.services.cluster: cluster lookup, member selection by role, version collection."""

from __future__ import annotations

import pytest

from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.errors import NotFound, RestError, UsageError
from ctl.services import cluster as svc

P = "/service/c/"


def make(leader_role: str = "primary", config: str = "{}"):
    kvs = [KeyValue(P + "config", config), KeyValue(P + "leader", "b"),
           KeyValue(P + "members/a", '{"role": "replica", "api_url": "http://h:1/patroni"}'),
           KeyValue(P + "members/b", '{"role": "%s", "api_url": "http://h:2/patroni"}' % leader_role),
           KeyValue(P + "members/c", '{"role": "replica"}')]
    return parse_cluster("c", P, kvs)


@pytest.mark.parametrize("leader_role,role,expected", [
    ("primary", None, "b"), ("primary", "leader", "b"), ("primary", "primary", "b"),
    ("primary", "replica", "a"), ("primary", "standby", "a"), ("primary", "any", "a"),
    ("standby_leader", "standby-leader", "b"), ("standby_leader", "leader", "b"),
    ("master", "primary", "b"),
])
def test_select_member_by_role(leader_role: str, role: str | None, expected: str) -> None:
    assert svc.select_member(make(leader_role), role).name == expected


def test_select_member_errors() -> None:
    with pytest.raises(NotFound, match="suitable member with role standby-leader"):
        svc.select_member(make("primary"), "standby-leader")
    with pytest.raises(NotFound, match="suitable member with role primary"):
        svc.select_member(make("standby_leader"), "primary")
    with pytest.raises(UsageError, match="mutually exclusive"):
        svc.select_member(make(), "leader", "a")
    with pytest.raises(NotFound, match="'zz'"):
        svc.select_member(make(), member="zz")
    assert svc.select_member(make(), member="c").name == "c"


def test_cluster_names() -> None:
    assert svc.cluster_names(["x", "y", "x"], "s") == ["x", "y"]
    assert svc.cluster_names([], "s") == ["s"]
    with pytest.raises(UsageError, match="no cluster name given"):
        svc.cluster_names([], None)


class Dcs:
    def __init__(self, known: list[str]) -> None:
        self.known = known

    def get_cluster(self, namespace: str, scope: str):
        return make() if scope in self.known else parse_cluster(scope, f"{namespace}{scope}/", [])

    def list_clusters(self, namespace: str) -> list[str]:
        return self.known


def test_read_cluster_names_the_known_clusters() -> None:
    assert svc.read_cluster(Dcs(["c"]), "/service/", "c").scope == "c"
    with pytest.raises(NotFound, match=r"^cluster 'x' not found; clusters in /service/: c, d$"):
        svc.read_cluster(Dcs(["c", "d"]), "/service/", "x")
    with pytest.raises(NotFound, match="/service/ holds no cluster"):
        svc.read_cluster(Dcs([]), "/service/", "x")


class Rest:
    def get_patroni(self, member):
        if member.name == "a":
            raise RestError("http://h:1/patroni: connection refused")
        return {"patroni": {"version": "4.1.5"}, "server_version": 150018}

    def map(self, fn, members):
        out = []
        for m in members:
            try:
                out.append(fn(m))
            except RestError as exc:
                out.append(exc)
        return out


def test_member_versions_skip_members_without_api_url_and_report_failures() -> None:
    lines = svc.member_versions(make(), Rest())
    assert [(v.member, v.patroni_version, v.server_version, v.error) for v in lines] == [
        ("a", None, None, "http://h:1/patroni: connection refused"), ("b", "4.1.5", 150018, None)]
    assert [v.member for v in svc.member_versions(make(), Rest(), ["b"])] == ["b"]
    with pytest.raises(NotFound, match="not a member of cluster 'c': q"):
        svc.member_versions(make(), Rest(), ["q"])
