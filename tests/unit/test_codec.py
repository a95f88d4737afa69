"""ctl.dcs.codec on the real Patroni 4.1.5 dumps and on the legacy value formats."""

from __future__ import annotations

import pytest

from ctl.dcs.codec import KeyValue, parse_cluster, parse_failover, parse_member, parse_status, parse_sync
from ctl.dcs.gateway import parse_range_response
from ctl.model import ClusterRole
from tests.support.patroni_dumps import DUMPS, load_dump, load_range_json

PREFIX = "/service/demo/"


def _cluster(name: str):
    kvs, revision = load_dump(name)
    return parse_cluster("demo", PREFIX, kvs, revision)


@pytest.mark.parametrize("name", DUMPS)
def test_every_dump_parses_into_three_members(name: str) -> None:
    c = _cluster(name)
    assert c.initialize == "7712146500642140331"
    assert [m.name for m in c.members] == ["node1", "node2", "node3"]
    assert c.leader is not None and c.leader_member is not None
    assert c.config is not None and c.config.ttl == 30
    assert c.status.optime and c.status.optime > 0
    assert c.revision > 0


def test_layout_keeps_mod_revisions_and_leases() -> None:
    c = _cluster("dcs_layout")
    assert c.config.mod_revision == 7
    assert c.leader.name == "node1" and c.leader.mod_revision == 8 and c.leader.lease == 8252743046955289862
    node2 = c.member("node2")
    assert node2.mod_revision == 41 and node2.receive_lsn == 67416816 and node2.replication_state == "streaming"
    assert c.status.slots == {"node1": 67416816, "node2": 67416816, "node3": 67416816}
    assert c.status.retain_slots == ("node1", "node2", "node3")


def test_paused_scheduled_and_sync_dumps() -> None:
    assert _cluster("dcs_paused").is_paused
    assert not _cluster("dcs_layout").is_paused
    sr = _cluster("dcs_scheduled_restart").member("node2").scheduled_restart
    assert sr["schedule"] == "2026-11-25T16:46:16+00:00"
    f = _cluster("dcs_scheduled_switchover").failover
    assert (f.leader, f.member, f.scheduled_at) == ("node1", "node2", "2026-11-25T16:46:16+00:00")
    sync = _cluster("dcs_sync_mode")
    assert sync.sync.sync_standby == ("node3",) and sync.synchronous_mode == "on"
    assert sync.cluster_role(sync.member("node3")) == ClusterRole.SYNC_STANDBY
    assert sync.cluster_role(sync.member("node1")) == ClusterRole.REPLICA
    assert sync.cluster_role(sync.member("node2")) == ClusterRole.LEADER
    assert len(sync.history) == 17 and sync.history[0].new_leader == "node2"
    assert sync.failover is not None and sync.failover.is_empty


def test_gateway_range_json_is_the_same_cluster_as_the_text_dump() -> None:
    kvs, revision = parse_range_response(load_range_json())
    assert revision == 41
    from_json = parse_cluster("demo", PREFIX, kvs, revision)
    from_text = _cluster("dcs_layout")
    assert from_json == from_text


def test_legacy_member_value_is_a_connection_url() -> None:
    m = parse_member("old", "postgres://10.0.0.1:5433/postgres")
    assert m.conn_url == "postgres://10.0.0.1:5433/postgres" and m.host == "10.0.0.1" and m.port == 5433


def test_legacy_failover_and_status_formats() -> None:
    f = parse_failover("node1:node2")
    assert (f.leader, f.member) == ("node1", "node2")
    assert parse_failover('{"leader": "a", "candidate": "b"}').member == "b"
    assert parse_status("12345").optime == 12345
    assert parse_sync('{"leader": "a", "sync_standby": "c,b"}').sync_standby == ("b", "c")


def test_legacy_optime_key_fills_status() -> None:
    kvs = [KeyValue(PREFIX + "optime/leader", "777"), KeyValue(PREFIX + "leader", "a"),
           KeyValue(PREFIX + "members/a", '{"conn_url": "postgres://h:5432/postgres"}')]
    assert parse_cluster("demo", PREFIX, kvs).optime == 777


def test_initializing_and_empty_leader() -> None:
    c = parse_cluster("demo", PREFIX, [KeyValue(PREFIX + "initialize", ""), KeyValue(PREFIX + "leader", "")])
    assert c.initialize == "" and c.leader is None and not c.is_empty
    assert parse_cluster("demo", PREFIX, []).is_empty


def test_cluster_role_follows_patronictl_rules() -> None:
    def build(config: str, sync: str, leader_role: str = "primary"):
        kvs = [KeyValue(PREFIX + "config", config), KeyValue(PREFIX + "leader", "a"),
               KeyValue(PREFIX + "members/a", '{"role": "%s"}' % leader_role),
               KeyValue(PREFIX + "members/b", '{"role": "replica"}'), KeyValue(PREFIX + "sync", sync)]
        c = parse_cluster("demo", PREFIX, kvs)
        return c.cluster_role(c.member("a")), c.cluster_role(c.member("b"))

    # the member's own standby_leader claim does not matter; the standby_cluster config does
    assert build("{}", "{}", "standby_leader") == (ClusterRole.LEADER, ClusterRole.REPLICA)
    assert build('{"standby_cluster": {"host": "h"}}', "{}")[0] == ClusterRole.STANDBY_LEADER
    assert build('{"standby_cluster": {}}', "{}")[0] == ClusterRole.LEADER
    # /sync counts only in synchronous mode, and patronictl does not check its leader field
    other_leader = '{"leader": "zzz", "sync_standby": "b"}'
    assert build('{"synchronous_mode": true}', other_leader)[1] == ClusterRole.SYNC_STANDBY
    assert build('{"synchronous_mode": "quorum"}', other_leader)[1] == ClusterRole.QUORUM_STANDBY
    assert build('{"synchronous_mode": false}', other_leader)[1] == ClusterRole.REPLICA


def test_member_fields_of_the_wrong_type_are_ignored() -> None:
    m = parse_member("x", '{"conn_url": ["a"], "api_url": 5, "state": {"s": 1}, "role": 1, "timeline": "7"}')
    assert (m.conn_url, m.api_url, m.state, m.role, m.timeline) == (None, None, None, None, 7)
    assert m.host is None and m.api_base is None
    assert parse_member("y", '{"api_url": "http://["}').api_base is None
    assert parse_member("z", '{"api_url": "http://h:8008/patroni"}').api_base == "http://h:8008"
