"""ctl.render against patronictl 4.1.5's real output, byte for byte where the dump matches the capture."""

from __future__ import annotations

import json

import pytest
import yaml

from ctl import render
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.model import Cluster, HistoryEntry, MemberVersion
from tests.support.patroni_dumps import load_dump, observed_stdout

PREFIX = "/service/demo/"
DUMP_LSN = "67416816"


def cluster_from(dump: str, lsn: int | None = None, edit=None) -> Cluster:
    """A dump as a Cluster; `lsn` rewrites the layout dump's WAL positions to match a capture taken earlier."""
    kvs, revision = load_dump(dump)
    out = []
    for kv in kvs:
        value = kv.value.replace(DUMP_LSN, str(lsn)) if lsn is not None else kv.value
        if edit is not None:
            value = edit(kv.key[len(PREFIX):], value)
        out.append(KeyValue(kv.key, value, kv.mod_revision, kv.lease))
    return parse_cluster("demo", PREFIX, out, revision)


def without_extras(data: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in render.EXTRA_KEYS} for row in data]


@pytest.mark.parametrize("dump,capture,extended", [
    ("dcs_paused", "list_paused.txt", False),
    ("dcs_sync_mode", "list_sync_mode.txt", False),
    ("dcs_scheduled_switchover", "list_with_scheduled_switchover.txt", False),
    ("dcs_scheduled_restart", "list_e_with_scheduled_restart.txt", True),
])
def test_pretty_list_matches_patronictl(dump: str, capture: str, extended: bool) -> None:
    assert render.render_list(cluster_from(dump), "pretty", extended=extended) == observed_stdout(capture)


def test_pretty_list_plain_and_extended() -> None:
    c = cluster_from("dcs_layout", 0x4045620)
    assert render.render_list(c) == observed_stdout("list.txt")
    assert render.render_list(c, extended=True) == observed_stdout("list_e.txt")


def test_pending_restart_columns_appear_when_a_member_has_them() -> None:
    def edit(key: str, value: str) -> str:
        if key.startswith("members/"):
            data = json.loads(value)
            data["pending_restart"] = True
            data["pending_restart_reason"] = {"max_connections": {"old_value": "100", "new_value": "150"}}
            return json.dumps(data)
        return value

    c = cluster_from("dcs_layout", 0x404B2F0, edit)
    assert render.render_list(c) == observed_stdout("list_after_max_connections.txt")


def test_long_pending_restart_reason_is_hidden_in_pretty_only() -> None:
    def edit(key: str, value: str) -> str:
        if key == "members/node2":
            data = json.loads(value)
            data["pending_restart_reason"] = {"shared_preload_libraries": {
                "old_value": "pg_stat_statements", "new_value": "pg_stat_statements,auto_explain"}}
            return json.dumps(data)
        return value

    c = cluster_from("dcs_layout", edit=edit)
    assert "shared_preload_libraries: [hidden - too long]" in render.render_list(c)
    rows = json.loads(render.render_list(c, "json"))
    assert rows[1]["Pending restart reason"] == \
        "shared_preload_libraries: pg_stat_statements->pg_stat_statements,auto_explain"


def test_json_yaml_tsv_match_patronictl_keys_and_values() -> None:
    c = cluster_from("dcs_layout", 0x4045620)
    got = json.loads(render.render_list(c, "json"))
    assert without_extras(got) == json.loads(observed_stdout("list_json.txt"))
    # patronictl's keys keep their order; the extra keys come after them
    assert list(got[1])[:10] == list(json.loads(observed_stdout("list_json.txt"))[1])
    assert got[1]["receive_lag_bytes"] == 0 and "receive_lag_bytes" not in got[0]
    assert without_extras(yaml.safe_load(render.render_list(c, "yaml"))) == \
        yaml.safe_load(observed_stdout("list_yaml.txt"))
    assert render.render_list(c, "yml") == render.render_list(c, "yaml")
    assert render.render_list(c, "tsv") == observed_stdout("list_tsv.txt")
    e = cluster_from("dcs_layout", 0x40458E0)
    assert without_extras(json.loads(render.render_list(e, "json", extended=True))) == \
        json.loads(observed_stdout("list_e_json.txt"))


def test_yaml_text_without_extras_is_byte_identical() -> None:
    c = cluster_from("dcs_layout", 0x4045620)
    text = render.render_list(c, "yaml")
    stripped = "".join(ln + "\n" for ln in text.splitlines() if not ln.strip().startswith(render.EXTRA_KEYS))
    assert stripped == observed_stdout("list_yaml.txt")


def test_machine_formats_carry_no_colour() -> None:
    c = cluster_from("dcs_sync_mode")
    for fmt in ("json", "yaml", "tsv"):
        assert "\x1b[" not in render.render_list(c, fmt)
    assert "\x1b[" not in render.render_list(c, "pretty", color=False)
    assert "\x1b[" in render.render_list(c, "pretty", color=True)


def test_topology_matches_patronictl_and_hangs_cascades_under_upstream() -> None:
    c = cluster_from("dcs_layout", 0x40458E0)
    assert render.render_list(c, topology=True) == observed_stdout("topology.txt")

    def cascade(key: str, value: str) -> str:
        if key == "members/node3":
            data = json.loads(value)
            data["tags"] = {"replicatefrom": "node2"}
            return json.dumps(data)
        return value

    names = [row["Member"] for row in render.list_rows(cluster_from("dcs_layout", edit=cascade), topology=True)[1]]
    assert names == ["node1", "+ node2", "  + node3"]
    text = render.render_list(cluster_from("dcs_layout", edit=cascade), topology=True)
    assert "{replicatefrom: node2}" in text  # tags in flow style in topology, as patronictl


def test_replicatefrom_cycle_still_shows_every_member() -> None:
    def cycle(key: str, value: str) -> str:
        if key in ("members/node2", "members/node3"):
            data = json.loads(value)
            data["tags"] = {"replicatefrom": "node3" if key.endswith("2") else "node2"}
            return json.dumps(data)
        return value

    rows = render.list_rows(cluster_from("dcs_layout", edit=cycle), topology=True)[1]
    assert sorted(r["Member"].split()[-1] for r in rows) == ["node1", "node2", "node3"]


def test_stopped_member_after_switchover_shows_unknown_lsn_and_empty_lag() -> None:
    def stopped(key: str, value: str) -> str:
        if key == "members/node1":
            return json.dumps({"conn_url": "postgres://127.0.0.1:5433/postgres", "api_url": "http://x:1/patroni",
                               "state": "stopped", "role": "replica", "version": "4.1.5"})
        if key == "leader":
            return "node2"
        return value

    lines = render.render_list(cluster_from("dcs_layout", edit=stopped)).splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[3:5]]
    assert cells[0] == ["node1", "127.0.0.1:5433", "Replica", "stopped", "", "unknown", "", "unknown", ""]
    assert cells[1] == ["node2", "127.0.0.1:5434", "Leader", "running", "1", "", "", "", ""]
    assert "|     unknown |     |" in lines[3]  # right-aligned like patronictl


def test_title_for_uninitialized_and_initializing() -> None:
    kvs = [KeyValue(PREFIX + "members/a", '{"conn_url": "postgres://10.0.0.1:5432/postgres", "state": "starting"}')]
    assert render.render_list(parse_cluster("demo", PREFIX, kvs)).startswith("+ Cluster: demo (uninitialized) ")
    kvs.append(KeyValue(PREFIX + "initialize", ""))
    text = render.render_list(parse_cluster("demo", PREFIX, kvs))
    assert text.startswith("+ Cluster: demo (initializing) ")
    # one member on the default port: no :port in Host
    assert "| a      | 10.0.0.1 | Replica | starting |" in text


def test_host_gets_port_when_two_members_share_a_host() -> None:
    kvs = [KeyValue(PREFIX + f"members/{n}", json.dumps({"conn_url": f"postgres://10.0.0.1:5432/postgres"}))
           for n in ("a", "b")]
    rows = render.list_rows(parse_cluster("demo", PREFIX, kvs))[1]
    assert [r["Host"] for r in rows] == ["10.0.0.1:5432", "10.0.0.1:5432"]


def test_lag_is_rounded_megabytes_and_bytes_are_exact() -> None:
    def behind(key: str, value: str) -> str:
        if key == "members/node2":
            data = json.loads(value)
            data["replay_lsn"] = int(DUMP_LSN) - 3 * 1024 * 1024 - 1000
            return json.dumps(data)
        return value

    row = render.list_rows(cluster_from("dcs_layout", edit=behind))[1][1]
    assert row["Replay Lag"] == 3 and row["replay_lag_bytes"] == 3 * 1024 * 1024 + 1000
    assert row["Receive Lag"] == 0


def test_tags_are_block_yaml_in_pretty_flow_in_tsv_and_objects_in_json() -> None:
    def tagged(key: str, value: str) -> str:
        if key == "members/node3":
            data = json.loads(value)
            data["tags"] = {"nofailover": True, "clonefrom": True}
            return json.dumps(data)
        return value

    c = cluster_from("dcs_layout", edit=tagged)
    pretty = render.render_list(c)
    assert "| clonefrom: true  |" in pretty and "| nofailover: true |" in pretty
    assert pretty.splitlines()[4].startswith("+--------+")  # multi-line cells: a rule between rows
    assert "{clonefrom: true, nofailover: true}" in render.render_list(c, "tsv")
    assert json.loads(render.render_list(c, "json"))[2]["Tags"] == {"nofailover": True, "clonefrom": True}


def test_history_matches_patronictl() -> None:
    c = cluster_from("dcs_sync_mode")
    first_two = c.history[:2]
    assert render.render_history(first_two) == observed_stdout("history_after_switches.txt")
    assert render.render_history((), "json") == observed_stdout("history_json.txt")
    rows = json.loads(render.render_history(first_two, "json"))
    assert rows[0] == {"TL": 1, "LSN": 67417816, "Reason": "no recovery target specified",
                       "Timestamp": "2026-11-25T16:31:43.843577+00:00", "New Leader": "node2"}
    short = render.render_history([HistoryEntry(3, 100, "r")], "json")
    assert json.loads(short) == [{"TL": 3, "LSN": 100, "Reason": "r", "Timestamp": "", "New Leader": ""}]


def test_show_config_dsn_version() -> None:
    c = cluster_from("dcs_layout")
    assert render.render_config(c.config.data) == observed_stdout("show_config.txt")
    assert json.loads(render.render_config(c.config.data, "json")) == dict(c.config.data)
    assert render.render_dsn(c.leader_member) == observed_stdout("dsn.txt")
    lines = [MemberVersion("node1", "4.1.5", 150018), MemberVersion("node2", "4.1.5", 90624),
             MemberVersion("node3", error="connection refused")]
    text = render.render_versions("0.1.0", lines)
    assert text == ("hactl version 0.1.0\n\nnode1: Patroni 4.1.5 PostgreSQL 15.18\n"
                    "node2: Patroni 4.1.5 PostgreSQL 9.6.24\nnode3: failed to get version: connection refused\n")
    data = json.loads(render.render_versions("0.1.0", lines, "json"))
    assert data["members"][0] == {"name": "node1", "patroni_version": "4.1.5", "postgresql_version": "15.18"}
    assert data["members"][2] == {"name": "node3", "error": "connection refused"}


def test_markup_in_names_is_printed_literally() -> None:
    kvs = [KeyValue(PREFIX + "members/[bold]x", '{"conn_url": "postgres://h:5432/postgres"}')]
    assert "[bold]x" in render.render_list(parse_cluster("demo", PREFIX, kvs), color=True)


def test_topology_machine_formats_name_the_upstream() -> None:
    def cascade(key: str, value: str) -> str:
        if key == "members/node3":
            data = json.loads(value)
            data["tags"] = {"replicatefrom": "node2"}
            return json.dumps(data)
        return value

    c = cluster_from("dcs_layout", edit=cascade)
    rows = json.loads(render.render_list(c, "json", topology=True))
    assert [(r["Member"], r.get("upstream")) for r in rows] == [("node1", None), ("node2", "node1"),
                                                                 ("node3", "node2")]
    tsv = render.render_list(c, "tsv", topology=True).splitlines()
    assert tsv[0].endswith("\tTags\tupstream") and tsv[3].startswith("demo\tnode3\t") and tsv[3].endswith("\tnode2")
    assert "upstream" not in render.render_list(c, "json")  # plain list output has no tree


def test_odd_member_values_never_break_any_format() -> None:
    import random

    rng = random.Random(1234)
    odd = [None, "", "x", 0, -1, 2**70, 1.5, True, [], {}, [1, "a"], {"k": None}, "postgres://", "::1"]
    fields = ["conn_url", "api_url", "state", "role", "xlog_location", "receive_lsn", "replay_lsn", "timeline",
              "replication_state", "tags", "pending_restart", "pending_restart_reason", "scheduled_restart"]
    for _ in range(200):
        kvs = []
        for name in ("a", "b", "c"):
            data = {f: rng.choice(odd) for f in rng.sample(fields, rng.randint(0, len(fields)))}
            kvs.append(KeyValue(PREFIX + "members/" + name, json.dumps(data)))
        kvs.append(KeyValue(PREFIX + "leader", rng.choice(["a", "b", "zz", ""])))
        kvs.append(KeyValue(PREFIX + "status", rng.choice(['{"optime": 5}', "12", "[]", "x"])))
        kvs.append(KeyValue(PREFIX + "failover", rng.choice(['{"scheduled_at": "nonsense"}', "a:b", "{}", "1"])))
        c = parse_cluster("demo", PREFIX, kvs)
        for fmt in ("pretty", "json", "yaml", "tsv"):
            for topo in (False, True):
                assert render.render_list(c, fmt, extended=rng.random() < 0.5, topology=topo)
