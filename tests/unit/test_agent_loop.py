"""The agent loop's pure-ish parts, with no etcd and no PostgreSQL: which dynamic config it adopts, and when."""

from __future__ import annotations

import logging

from ctl.agent.loop import Agent
from ctl.agent.scheduled import _version_below
from ctl.config import build
from ctl.model import Cluster, DynamicConfig, Member

RAW = {
    "scope": "demo", "name": "node1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "restapi": {"listen": "127.0.0.1:8008"},
    "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/none"},
    "bootstrap": {"dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}},
}


def agent() -> Agent:
    return Agent(build(RAW, "node1.yml"), dcs=None, pg=None)


def cluster(data: dict, revision: int) -> Cluster:
    return Cluster(scope="demo", config=DynamicConfig(data, mod_revision=revision))


def test_a_valid_config_is_adopted_and_drives_the_settings():
    a = agent()
    a.dynamic.check(cluster({"ttl": 40, "loop_wait": 5, "retry_timeout": 10}, 7))
    assert a.good_config is not None and a.good_config.mod_revision == 7


def test_a_bad_value_keeps_the_last_good_config_and_is_logged_once(caplog):
    a = agent()
    a.dynamic.check(cluster({"ttl": 40, "loop_wait": 5, "retry_timeout": 10}, 7))
    bad = cluster({"ttl": 40, "loop_wait": "abc", "retry_timeout": 10}, 8)
    with caplog.at_level(logging.ERROR, logger="hactl.agent"):
        for _ in range(5):  # every loop sees the same revision
            a.dynamic.check(bad)
    assert a.good_config.mod_revision == 7
    assert len([r for r in caplog.records if "ignoring invalid dynamic config" in r.getMessage()]) == 1


def test_unknown_postgresql_parameters_are_refused_but_unknown_keys_are_not():
    a = agent()
    a.dynamic.check(cluster({"ttl": 30, "no_such_key": 1}, 3))
    assert a.good_config is not None and a.good_config.mod_revision == 3
    a.dynamic.check(cluster({"ttl": 30, "postgresql": {"parameters": {"max_conections": 5}}}, 4))
    assert a.good_config.mod_revision == 3


def test_own_writes_do_not_wake_the_loop():
    a = agent()
    a.cluster = Cluster(scope="demo", members=(Member("node1"), Member("node2")))
    assert not a.relevant_event(False, "members/node1", "{}")
    assert not a.relevant_event(False, "members/node2", "{}")  # routine updates of known members
    assert a.relevant_event(False, "members/node3", "{}")  # a new member: the leader makes its slot now
    assert not a.relevant_event(True, "members/node2", "")
    assert not a.relevant_event(False, "leader", "node1")  # our renewal
    assert not a.relevant_event(False, "status", "{}")
    assert a.relevant_event(True, "leader", "")  # the lock expired or was released: react now
    assert a.relevant_event(False, "leader", "node2")
    assert a.relevant_event(False, "failover", '{"member":"node1"}')
    assert a.relevant_event(False, "config", "{}")


def test_the_leader_wakes_when_its_sync_standby_hands_off():
    from ctl.model import Leader, SyncState

    a = agent()
    a.cluster = Cluster(scope="demo", config=DynamicConfig({"synchronous_mode": True}), leader=Leader("node1"),
                        members=(Member("node1"), Member("node2"), Member("node3")),
                        sync=SyncState(leader="node1", sync_standby=("node2",)))
    running = '{"state":"running","role":"replica"}'
    assert not a.relevant_event(False, "members/node2", running)
    assert a.relevant_event(False, "members/node2", '{"state":"running","tags":{"nosync":true,"sync_priority":0}}')
    assert a.relevant_event(False, "members/node2", '{"state":"restarting","role":"replica"}')
    assert not a.relevant_event(False, "members/node3", '{"state":"running","tags":{"nosync":true}}')


def test_postgres_version_condition_of_a_scheduled_restart():
    assert _version_below(150018, "15.19")
    assert not _version_below(150018, "15.18")
    assert _version_below(150018, "16")
    assert not _version_below(150018, "9.6.3")


def test_scheduled_restart_runs_when_due_and_its_conditions_hold():
    from types import SimpleNamespace

    from ctl.agent.scheduled import check

    at = {"schedule": "2026-01-01T12:00:00+00:00"}
    pg = SimpleNamespace(pending_restart={}, server_version=150018)
    assert check(None, 0, "replica", pg) is None
    assert check(at, 1767268800 - 1, "replica", pg) is None  # not yet
    assert check(at, 1767268800 + 1, "replica", pg) == ""  # run it
    assert check({**at, "role": "primary"}, 1767268800 + 1, "replica", pg) == "role is replica, not primary"
    assert check({**at, "restart_pending": True}, 1767268800 + 1, "replica", pg) == "no restart pending"
    assert check({**at, "postgres_version": "15.10"}, 1767268800 + 1, "replica", pg) == \
        "PostgreSQL is not older than 15.10"
