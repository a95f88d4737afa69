"""The agent's start-up validation and effective settings: one-line errors, Patroni's timing rule, precedence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ctl.agent import settings as st
from ctl.config import build
from ctl.errors import ConfigError, ExitCode
from ctl.model import DynamicConfig

GOOD = {
    "scope": "demo",
    "name": "node1",
    "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "restapi": {"listen": "127.0.0.1:8008"},
    "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/x", "parameters": {"work_mem": "8MB"}},
    "bootstrap": {"dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                          "postgresql": {"parameters": {"max_connections": 150, "work_mem": "4MB"}}}},
    "tags": {"failover_priority": 0, "replicatefrom": "node2"},
}


def cfg(**changes):
    raw = {**GOOD, **changes}
    return build(raw, "node1.yml")


def test_a_good_file_passes():
    st.validate(cfg())


@pytest.mark.parametrize("changes,message", [
    ({"scope": None}, "'scope' is required"),
    ({"name": None}, "'name' is required"),
    ({"etcd3": None}, "no DCS configured"),
    ({"restapi": {}}, "restapi.listen is required"),
    ({"restapi": {"listen": "127.0.0.1:http"}}, "bad port"),
    ({"postgresql": {"listen": "127.0.0.1:5432"}}, "'postgresql.data_dir' is required"),
    ({"bootstrap": {"dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 15}}},
     "loop_wait + 2*retry_timeout must be <= ttl (10 + 2*15 > 30)"),
    ({"bootstrap": {"dcs": {"loop_wait": "abc"}}}, "loop_wait must be an integer"),
    ({"bootstrap": {"initdb": "data-checksums"}}, "'bootstrap.initdb' must be a list"),
    ({"bootstrap": {"users": {"admin": {"options": ["createdb", "drop table x"]}}}}, "unknown role option"),
])
def test_bad_files_give_one_line_errors(changes, message):
    with pytest.raises(ConfigError) as exc:
        st.validate(cfg(**changes))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_effective_settings_prefer_the_dcs_and_fall_back_on_bad_values():
    c = cfg()
    assert st.ha_settings(c, None).ttl == 30
    dyn = DynamicConfig({"ttl": 40, "loop_wait": 5, "retry_timeout": 10, "maximum_lag_on_failover": 100})
    s = st.ha_settings(c, dyn)
    assert (s.ttl, s.loop_wait, s.maximum_lag_on_failover) == (40, 5, 100)
    bad = DynamicConfig({"ttl": 10, "loop_wait": "abc"})
    assert st.ha_settings(c, bad).ttl == 30  # last good (bootstrap) timing kept
    assert s.nofailover is True  # failover_priority 0 means nofailover, as in Patroni
    assert s.replicatefrom == "node2"


def test_parameters_defaults_then_dcs_then_local():
    params = st.pg_parameters(cfg(), None)
    assert params["wal_level"] == "replica"
    assert params["max_connections"] == 150
    assert params["work_mem"] == "8MB"  # the local file wins


def test_agent_command_reports_a_bad_file_in_one_line(tmp_path):
    path = tmp_path / "node.yml"
    path.write_text("scope: demo\nname: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "ctl", "agent", "-c", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr.startswith("Error: malformed YAML in ")
    assert ", line " in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_nofailover_follows_patroni_precedence_everywhere():
    from ctl.agent.peers import parse_status
    from ctl.model import Member, tags_nofailover

    for tags, expected in [({}, False), ({"failover_priority": 0}, True), ({"failover_priority": 3}, False),
                           ({"nofailover": True}, True), ({"nofailover": False, "failover_priority": 0}, False)]:
        assert tags_nofailover(tags) is expected, tags
        assert Member("m", tags=tags).nofailover is expected
        assert parse_status("m", {"tags": tags}).nofailover is expected
        assert st.ha_settings(cfg(tags=tags), None).nofailover is expected


def _pg(**extra):
    return cfg(postgresql={**GOOD["postgresql"], **extra})


def test_basebackup_options_in_patronis_list_and_mapping_forms():
    assert st.basebackup_options(_pg(basebackup=[{"max-rate": "10M"}, "verbose", {"checkpoint": "fast"}])) == \
        ["--max-rate=10M", "--verbose", "--checkpoint=fast"]
    assert st.basebackup_options(_pg(basebackup={"max-rate": "100M", "waldir": "/wal"})) == \
        ["--max-rate=100M", "--waldir=/wal"]
    assert st.basebackup_options(_pg(create_replica_methods=["wal_e", "basebackup"])) == []
    assert st.replica_methods_ignored(_pg(create_replica_methods=["wal_e", "basebackup"])) == ["wal_e"]


@pytest.mark.parametrize("extra,message", [
    ({"basebackup": [{"pgdata": "/x"}]}, "pgdata is set by hactl"),
    ({"basebackup": [{"a": 1, "b": 2}]}, "one-key mapping"),
    ({"basebackup": "max-rate=1M"}, "must be a list or a mapping"),
    ({"basebackup": [{"max-rate; rm -rf /": 1}]}, "bad option name"),
    ({"create_replica_methods": ["wal_e"]}, "only with 'basebackup'"),
])
def test_bad_basebackup_settings_are_one_line_errors_at_start(extra, message):
    with pytest.raises(ConfigError, match=message):
        st.validate(_pg(**extra))


def test_primary_start_timeout_and_member_slots_ttl_from_the_dynamic_config():
    s = st.ha_settings(cfg(), DynamicConfig({"ttl": 30, "master_start_timeout": 0, "member_slots_ttl": "30min"}))
    assert (s.primary_start_timeout, s.member_slots_ttl) == (0, 1800)
    s = st.ha_settings(cfg(), DynamicConfig({"ttl": 30, "primary_start_timeout": 20, "master_start_timeout": 0}))
    assert (s.primary_start_timeout, s.member_slots_ttl) == (20, 1800)


def test_a_standby_cluster_without_basebackup_is_refused_before_anything_starts():
    dcs = {**GOOD["bootstrap"]["dcs"], "standby_cluster": {"host": "10.0.0.5", "port": 5432,
                                                          "create_replica_methods": ["pgbackrest"]}}
    with pytest.raises(ConfigError) as err:
        st.validate(cfg(bootstrap={"dcs": dcs}))
    assert str(err.value).startswith("node1.yml: bootstrap.dcs.standby_cluster.create_replica_methods: hactl creates "
                                     "replicas only with 'basebackup'")
    dcs["standby_cluster"]["create_replica_methods"] = ["pgbackrest", "basebackup"]
    st.validate(cfg(bootstrap={"dcs": dcs}))
