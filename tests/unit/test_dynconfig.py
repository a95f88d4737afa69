"""ctl.dynconfig: Patroni's recursive config patch and the dynamic-config validation shared by agent and CLI."""

from __future__ import annotations

import pytest

from ctl.dynconfig import patch_config, validate_dynamic_config

BASE = {
    "ttl": 30,
    "loop_wait": 10,
    "retry_timeout": 10,
    "maximum_lag_on_failover": 1048576,
    "postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": 100, "wal_level": "replica"}},
}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({}, BASE),
        ({"pause": True}, {**BASE, "pause": True}),
        ({"ttl": None}, {k: v for k, v in BASE.items() if k != "ttl"}),
        ({"no_such_key": None}, BASE),
        ({"loop_wait": 5}, {**BASE, "loop_wait": 5}),
        # same printed value: the old type stays (Patroni compares str())
        ({"loop_wait": "10"}, BASE),
        ({"postgresql": {"parameters": {"max_connections": 200}}},
         {**BASE, "postgresql": {"use_pg_rewind": True,
                                 "parameters": {"max_connections": 200, "wal_level": "replica"}}}),
        ({"postgresql": {"parameters": {"wal_level": None}, "use_slots": True}},
         {**BASE, "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                 "parameters": {"max_connections": 100}}}),
        # a new mapping is added without its nulls
        ({"standby_cluster": {"host": "h", "port": None}}, {**BASE, "standby_cluster": {"host": "h"}}),
        # a mapping replaces a scalar, a scalar replaces a mapping
        ({"ttl": {"a": 1}}, {**BASE, "ttl": {"a": 1}}),
        ({"postgresql": "x"}, {**BASE, "postgresql": "x"}),
        ({"tags": ["a", "b"]}, {**BASE, "tags": ["a", "b"]}),
    ],
)
def test_patch_config(patch, expected):
    assert patch_config(BASE, patch) == expected


def test_patch_config_does_not_modify_its_arguments():
    base = {"postgresql": {"parameters": {"a": 1}}}
    patch = {"postgresql": {"parameters": {"b": 2, "a": None}}, "new": {"x": [1]}}
    result = patch_config(base, patch)
    assert base == {"postgresql": {"parameters": {"a": 1}}}
    assert patch == {"postgresql": {"parameters": {"b": 2, "a": None}}, "new": {"x": [1]}}
    result["new"]["x"].append(2)
    assert patch["new"]["x"] == [1]
    assert result["postgresql"] == {"parameters": {"b": 2}}


@pytest.mark.parametrize(
    "config",
    [
        {},
        BASE,
        {"ttl": 8, "loop_wait": 2, "retry_timeout": 3},
        {"ttl": "30", "loop_wait": "10", "retry_timeout": "10"},
        {"ttl": 4, "loop_wait": 1, "retry_timeout": 1},
        {"ttl": 30.0},
        {"maximum_lag_on_failover": 0},
        {"pause": True, "postgresql": {"parameters": {"max_connections": 200}}},
    ],
)
def test_valid(config):
    assert validate_dynamic_config(config) == []


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        ({"ttl": 20}, ["loop_wait + 2*retry_timeout must be <= ttl (10 + 2*10 > 20)"]),
        ({"ttl": 8, "loop_wait": 2, "retry_timeout": 4},
         ["loop_wait + 2*retry_timeout must be <= ttl (2 + 2*4 > 8)"]),
        ({"ttl": 3, "loop_wait": 1, "retry_timeout": 1}, ["ttl must be >= 4, got 3"]),
        ({"loop_wait": 0}, ["loop_wait must be >= 1, got 0"]),
        ({"retry_timeout": 0}, ["retry_timeout must be >= 1, got 0"]),
        ({"ttl": "abc"}, ["ttl must be an integer, got 'abc'"]),
        ({"ttl": True}, ["ttl must be an integer, got True"]),
        ({"loop_wait": 1.5}, ["loop_wait must be an integer, got 1.5"]),
        ({"retry_timeout": None}, ["retry_timeout must be an integer, got None"]),
        ({"maximum_lag_on_failover": -1}, ["maximum_lag_on_failover must be >= 0, got -1"]),
        ({"maximum_lag_on_failover": "1MB"}, ["maximum_lag_on_failover must be an integer, got '1MB'"]),
        ({"ttl": "x", "maximum_lag_on_failover": -5},
         ["ttl must be an integer, got 'x'", "maximum_lag_on_failover must be >= 0, got -5"]),
    ],
)
def test_invalid(config, problems):
    assert validate_dynamic_config(config) == problems


def test_not_an_object():
    assert validate_dynamic_config([1, 2]) == ["the configuration must be a JSON object"]  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "ok"), [(1800, True), ("30min", True), ("1h", True), (0, True),
                                           ("soon", False), (-5, False), ([1], False)])
def test_member_slots_ttl_is_a_duration(value, ok):
    problems = validate_dynamic_config({**BASE, "member_slots_ttl": value})
    assert (problems == []) is ok, problems
    if not ok:
        assert "member_slots_ttl must be a number of seconds >= 0 or a duration like '30min'" in problems[0]


def test_primary_start_timeout_and_its_old_spelling_are_seconds():
    assert validate_dynamic_config({**BASE, "primary_start_timeout": 0, "master_start_timeout": 30}) == []
    assert validate_dynamic_config({**BASE, "primary_start_timeout": -1})


@pytest.mark.parametrize("methods, problem", [
    (["basebackup"], None),
    (["wal_e", "basebackup"], None),
    (["pgbackrest"], "standby_cluster.create_replica_methods: hactl creates replicas only with 'basebackup'"),
    ("basebackup", "standby_cluster.create_replica_methods must be a list of strings"),
])
def test_standby_cluster_replica_methods_must_include_basebackup(methods, problem):
    found = validate_dynamic_config({"standby_cluster": {"host": "10.0.0.5", "port": 5432,
                                                         "create_replica_methods": methods}})
    if problem is None:
        assert not [p for p in found if "create_replica_methods" in p], found
    else:
        assert any(p.startswith(problem) for p in found), found
