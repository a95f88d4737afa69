"""ctl.dynconfig_schema and ctl.pgsettings: every rule of the dynamic-config validation, with its message."""

from __future__ import annotations

import pytest

from ctl import pgsettings
from ctl.dynconfig_schema import AGENT_LIMITS, problems_of, validate
from ctl.pgsettings import Catalogue, check_parameters, parse_bool

PG15 = pgsettings.bundled(15)
BASE = {
    "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
    "postgresql": {"use_pg_rewind": True, "use_slots": True, "pg_hba": ["local all all trust"],
                   "parameters": {"max_connections": 100, "wal_level": "replica", "hot_standby": "on",
                                  "wal_keep_size": "128MB", "wal_log_hints": "on"}},
}


def with_(**kw):
    return {**BASE, **kw}


def params(**kw):
    return {**BASE, "postgresql": {**BASE["postgresql"], "parameters": kw}}


def test_bundled_catalogue_is_postgresql_15():
    assert PG15.major == 15 and "max_connections" in PG15.settings
    spec = PG15.get("work_mem")
    assert spec.vartype == "integer" and spec.unit == "kB" and spec.context == "user" and spec.min_val == 64
    assert PG15.get("shared_buffers").needs_restart and not PG15.get("work_mem").needs_restart
    assert PG15.get("MAX_CONNECTIONS") is PG15.get("max_connections")  # GUC names are case-insensitive
    assert pgsettings.bundled(99).source == "bundled PostgreSQL 15 table (no table for PostgreSQL 99)"


def test_valid_configs():
    assert problems_of(BASE, PG15) == []
    assert problems_of({}, PG15) == []
    assert problems_of(with_(synchronous_mode="quorum", synchronous_node_count=2, failsafe_mode=True,
                             pause=True, check_timeline=False, primary_start_timeout=0,
                             standby_cluster={"host": "h", "port": 5432, "primary_slot_name": "s"},
                             slots={"a": {"type": "physical"},
                                    "b": {"type": "logical", "database": "d", "plugin": "pgoutput"}}), PG15) == []


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (with_(ttl=15, loop_wait=1, retry_timeout=3), "ttl must be >= 20, got 15"),
        (with_(loop_wait=0), "loop_wait must be >= 1, got 0"),
        (with_(retry_timeout=2), "retry_timeout must be >= 3, got 2"),
        (with_(loop_wait=15), "loop_wait + 2*retry_timeout must be <= ttl (15 + 2*10 > 30)"),
        (with_(loop_wait="abc"), "loop_wait must be an integer, got 'abc'"),
        (with_(ttl=True), "ttl must be an integer, got True"),
        (with_(maximum_lag_on_failover=-1), "maximum_lag_on_failover must be >= 0, got -1"),
        (with_(maximum_lag_on_failover="1MB"), "maximum_lag_on_failover must be an integer, got '1MB'"),
        (with_(synchronous_mode="sometimes"),
         "synchronous_mode must be one of false, true, on, off, quorum; got 'sometimes'"),
        (with_(synchronous_node_count=0), "synchronous_node_count must be >= 1, got 0"),
        (with_(failsafe_mode="maybe"), "failsafe_mode must be a boolean (true/false), got 'maybe'"),
        (with_(loop_wiat=5), "unknown key loop_wiat; did you mean loop_wait?"),
        (with_(zzz=1), "unknown key zzz"),
        (with_(postgresql={"use_pg_rewnd": True}), "unknown key postgresql.use_pg_rewnd; did you mean use_pg_rewind?"),
        (with_(postgresql={"pg_hba": "host all all 0/0 md5"}),
         "postgresql.pg_hba must be a list of strings, got 'host all all 0/0 md5'"),
        (with_(postgresql={"data_dir": "/x"}),
         "postgresql.data_dir is a local setting (patroni.yml only); the dynamic configuration ignores it"),
        (with_(postgresql={"parameters": [1]}), "postgresql.parameters must be a mapping, got [1]"),
        (with_(standby_cluster={"port": "x"}), "standby_cluster.port must be an integer, got 'x'"),
        (with_(slots={"s": {"type": "logical", "plugin": "p"}}), "slots.s.database is required for a logical slot"),
        (with_(slots={"s": {"type": "x"}}), "slots.s.type must be physical or logical, got 'x'"),
        ("x", "the configuration must be a JSON object"),
    ],
)
def test_each_schema_rule(config, problem):
    assert problems_of(config, PG15) == [problem]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("max_conections", 100, "postgresql.parameters.max_conections: unknown PostgreSQL 15 parameter; "
                                "did you mean max_connections?"),
        ("qqqzzzxx", 1, "postgresql.parameters.qqqzzzxx: unknown PostgreSQL 15 parameter"),
        ("max_connections", 0, "postgresql.parameters.max_connections must be between 1 and 262143, got 0"),
        ("max_connections", "lots", "postgresql.parameters.max_connections must be an integer, got 'lots'"),
        ("max_connections", "100MB", "postgresql.parameters.max_connections takes no unit, got '100MB'"),
        ("max_connections", True, "postgresql.parameters.max_connections must be an integer, got True"),
        ("work_mem", "8XB", "postgresql.parameters.work_mem has an invalid unit in '8XB'; "
                            "valid units are B, kB, MB, GB, TB"),
        ("work_mem", "32kB", "postgresql.parameters.work_mem must be between 64 and 2147483647 (in kB), got '32kB'"),
        ("checkpoint_timeout", "5MB", "postgresql.parameters.checkpoint_timeout has an invalid unit in '5MB'; "
                                      "valid units are us, ms, s, min, h, d"),
        ("checkpoint_timeout", "10s", "postgresql.parameters.checkpoint_timeout must be between 30 and 86400 "
                                      "(in s), got '10s'"),
        ("random_page_cost", "-1", "postgresql.parameters.random_page_cost must be between 0 and 1.79769e+308, "
                                   "got '-1'"),
        ("hot_standby", "maybe", "postgresql.parameters.hot_standby must be a boolean (on/off, true/false, "
                                 "yes/no, 1/0), got 'maybe'"),
        ("wal_level", "hot", "postgresql.parameters.wal_level must be one of minimal, replica, logical; got 'hot'"),
        ("wal_level", True, "postgresql.parameters.wal_level must be one of minimal, replica, logical; got True"),
        ("wal_level", ["replica"], "postgresql.parameters.wal_level must be a single value, got ['replica']"),
    ],
)
def test_each_guc_rule(name, value, problem):
    assert check_parameters({name: value}, PG15) == [problem]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("work_mem", "8MB"), ("work_mem", 4096), ("work_mem", " 1 GB "), ("work_mem", "1.5MB"),
        ("shared_buffers", "128MB"), ("shared_buffers", 16384), ("checkpoint_timeout", "5min"),
        ("max_connections", "0x64"), ("random_page_cost", 1.1), ("random_page_cost", "4"),
        ("hot_standby", "on"), ("hot_standby", False), ("hot_standby", "of"), ("hot_standby", 1),
        ("wal_level", "REPLICA"), ("wal_level", "hot_standby"), ("synchronous_commit", True),
        ("synchronous_commit", "remote_apply"), ("synchronous_commit", "yes"), ("log_line_prefix", "%m "),
        ("pg_stat_statements.track", "all"), ("wal_keep_segments", 8), ("autovacuum_vacuum_cost_delay", "2ms"),
        ("statement_timeout", -0), ("log_min_duration_statement", -1),
    ],
)
def test_values_postgresql_accepts(name, value):
    assert check_parameters({name: value}, PG15) == []


def test_every_problem_is_listed_not_just_the_first():
    config = with_(loop_wait="x", ttl=10, zzz=1, synchronous_mode="maybe")
    config["postgresql"] = {"parameters": {"max_conections": 1, "work_mem": "1XB", "wal_level": "hot"}}
    problems = problems_of(config, PG15)
    assert len(problems) == 7, problems
    assert problems[0] == "loop_wait must be an integer, got 'x'" and problems[1] == "ttl must be >= 20, got 10"


def test_without_catalogue_parameters_are_not_checked():
    assert problems_of(params(no_such_guc="x"), None) == []


def test_agent_limits_accept_short_test_ttls():
    assert problems_of({"ttl": 8, "loop_wait": 2, "retry_timeout": 3}, PG15, AGENT_LIMITS) == []
    assert problems_of({"ttl": 8, "loop_wait": 2, "retry_timeout": 3}, PG15) == ["ttl must be >= 20, got 8"]


def test_problems_already_in_the_current_config_do_not_block():
    current = {"ttl": 8, "loop_wait": 2, "retry_timeout": 3}
    result = validate({**current, "maximum_lag_on_failover": 5}, current, PG15)
    assert result.ok and result.existing == ["ttl must be >= 20, got 8"]
    result = validate({**current, "loop_wait": 0}, current, PG15)
    assert result.problems == ["loop_wait must be >= 1, got 0"]


def test_catalogue_from_member_rows():
    cat = Catalogue.from_rows([{"name": "Foo", "vartype": "integer", "unit": None, "min_val": "1",
                                "max_val": "10", "enumvals": None, "context": "postmaster"}], 17, "member node1")
    assert check_parameters({"foo": 11}, cat) == ["postgresql.parameters.foo must be between 1 and 10, got 11"]
    assert check_parameters({"fooo": 1}, cat) == [
        "postgresql.parameters.fooo: unknown PostgreSQL 17 parameter; did you mean foo?"]


@pytest.mark.parametrize(("text", "value"), [("t", True), ("FALSE", False), ("on", True), ("of", False),
                                             ("1", True), ("0", False), ("y", True), ("o", None), ("x", None)])
def test_parse_bool(text, value):
    assert parse_bool(text) is value
