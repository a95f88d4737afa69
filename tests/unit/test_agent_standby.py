"""Standby cluster, the agent's side: the remote conninfo, slot and recovery parameters Patroni writes."""

from __future__ import annotations

from ctl.agent import standby as sb
from ctl.agent.node import NodeState, conninfo
from ctl.config import build
from ctl.ha.standby import REMOTE
from ctl.ha.state import HaSettings
from ctl.model import DynamicConfig

RAW = {
    "scope": "dr", "name": "b1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "postgresql": {"authentication": {"replication": {"username": "rep", "password": "s3cret"}}},
    "bootstrap": {"dcs": {"standby_cluster": {"host": "10.0.0.9", "port": 5433}}},
}


def node(section: dict | None) -> NodeState:
    n = NodeState("b1", settings=HaSettings())
    if section is not None:
        n.good_config = DynamicConfig({"standby_cluster": section}, mod_revision=5)
    return n


def test_bootstrap_dcs_is_used_before_the_config_key_exists():
    cfg = build(RAW, "b1.yml")
    assert conninfo(cfg, node(None), REMOTE, replication=True) == (
        "host='10.0.0.9' port=5433 user='rep' password='s3cret' application_name='b1' connect_timeout=5")


def test_the_config_key_wins_and_its_keys_go_where_patroni_puts_them():
    cfg = build(RAW, "b1.yml")
    section = {"host": "a,b", "port": 5432, "primary_slot_name": "dr_slot", "restore_command": "cp /a/%f %p",
               "archive_cleanup_command": "true", "recovery_min_apply_delay": "5min"}
    n = node(section)
    assert "target_session_attrs=read-write" in sb.remote_conninfo(cfg, n)
    assert sb.remote_slot(cfg, n) == "dr_slot"
    assert sb.recovery_parameters(cfg, n, REMOTE) == {"restore_command": "cp /a/%f %p",
                                                      "archive_cleanup_command": "true",
                                                      "recovery_min_apply_delay": "5min"}
    assert sb.recovery_parameters(cfg, n, "b2") == {"restore_command": "cp /a/%f %p",
                                                    "archive_cleanup_command": "true"}
    assert sb.remote_slot(cfg, node({"host": "h"})) is None  # no slot unless named (Patroni's code)


def test_a_removed_section_means_no_remote():
    cfg = build(RAW, "b1.yml")
    n = node({})
    assert sb.section(cfg, n) is None and sb.recovery_parameters(cfg, n, REMOTE) == {}


def test_newest_history_timeline(tmp_path):
    (tmp_path / "pg_wal").mkdir()
    assert sb.newest_history_timeline(str(tmp_path)) is None
    for name in ("00000002.history", "0000000A.history", "000000030000000000000004"):
        (tmp_path / "pg_wal" / name).write_text("")
    assert sb.newest_history_timeline(str(tmp_path)) == 10
