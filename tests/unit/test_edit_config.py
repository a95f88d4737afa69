"""edit-config: pair parsing, merge order, diff and effects rendering, and the command through CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctl import render_edit
from ctl.cli.app import app
from ctl.cli.editconfig import editor_command
from ctl.config import build
from ctl.dcs import keys
from ctl.dcs.codec import KeyValue, parse_cluster
from tests.unit.audit_store import AuditStore
from ctl.errors import CasFailed, ExitCode, OperationFailed, UsageError
from ctl.services import edit_config as ec
from tests.support.patroni_dumps import load_dump

NS = "/service/"
CONFIG = build({"scope": "demo", "etcd3": {"hosts": ["127.0.0.1:2379"]}}, "test.yml")


class FakeDcs(AuditStore):
    """A key-value store with etcd's mod_revision compare-and-set, answering like EtcdGateway."""

    def __init__(self) -> None:
        kvs, _ = load_dump("dcs_sync_mode")
        self.revision = max(kv.mod_revision for kv in kvs) + 1
        self.kv = {kv.key: (kv.value, kv.mod_revision) for kv in kvs}
        self.before_put = None  # a hook: someone else writes between our read and our write
        self.puts: list[tuple[str, str]] = []

    @property
    def config_key(self) -> str:
        return keys.key(NS, "demo", keys.CONFIG)

    def get_cluster(self, namespace: str, scope: str):
        prefix = keys.cluster_prefix(namespace, scope)
        kvs = [KeyValue(k, v, rev) for k, (v, rev) in self.kv.items() if k.startswith(prefix)]
        return parse_cluster(scope, prefix, kvs, self.revision)

    def list_clusters(self, namespace: str) -> list[str]:
        return ["demo"]

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> int:
        if self.audit_put(key, value):
            return 1
        if self.before_put:
            hook, self.before_put = self.before_put, None
            hook(self)
        if mod_revision is not None and self.kv.get(key, (None, 0))[1] != mod_revision:
            raise CasFailed(f"{key} was changed by someone else since it was read")
        self.revision += 1
        self.kv[key] = (value, self.revision)
        self.puts.append((key, value))
        return self.revision

    def config(self) -> dict:
        return json.loads(self.kv[self.config_key][0])

    def close(self) -> None:
        pass


def run(args: list[str], dcs: FakeDcs, stdin: str | None = None, env: dict | None = None):
    return CliRunner().invoke(app, ["edit-config", *args], input=stdin,
                              obj={"config": CONFIG, "dcs": dcs, "rest": None}, env=env or {})


# ----------------------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["loop_wait=5"], {"loop_wait": 5, "x": {"y": 1}}),
        (["loop_wait='5'"], {"loop_wait": "5", "x": {"y": 1}}),
        (["a.b.c=on"], {"a": {"b": {"c": True}}, "x": {"y": 1}}),
        (["x.y=null"], {}),  # the emptied parent goes too
        (["x.y="], {}),  # an empty value is YAML null
        (["x=[1, 2]"], {"x": [1, 2]}),
        (["postgresql.parameters.pg_stat_statements.max=10000"],
         {"x": {"y": 1}, "postgresql": {"parameters": {"pg_stat_statements.max": 10000}}}),
        (["v=a=b"], {"v": "a=b", "x": {"y": 1}}),
        (["loop_wait=5", "loop_wait=6"], {"loop_wait": 6, "x": {"y": 1}}),
    ],
)
def test_apply_pairs(pairs, expected):
    assert ec.apply_pairs({"x": {"y": 1}}, pairs) == expected


@pytest.mark.parametrize("pair", ["loop_wait", "=5", "a..b=1", "a=[1"])
def test_bad_pairs(pair):
    with pytest.raises(UsageError, match="invalid parameter setting"):
        ec.apply_pairs({}, [pair])


def test_merge_order_replace_apply_set_pg():
    current = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}}
    edits = ec.Edits(replace={"ttl": 40, "gone": None, "postgresql": {"parameters": {"a": 1, "b": 2}}},
                     apply={"ttl": 50, "postgresql": {"parameters": {"a": None}}},
                     pairs=("ttl=60", "postgresql.parameters.b=3"), pg_pairs=("b=4", "c=5"))
    assert ec.apply_edits(current, edits) == {"ttl": 60, "postgresql": {"parameters": {"b": 4, "c": 5}}}
    assert ec.apply_edits(current, ec.Edits(pairs=("loop_wait=5",)))["ttl"] == 30  # no replace: kept
    assert ec.apply_edits(current, ec.Edits(apply={"loop_wait": None})) == {
        "ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}}


def test_load_yaml_mapping():
    assert ec.load_yaml_mapping("", "f") == {}
    assert ec.load_yaml_mapping("a: 1\n", "f") == {"a": 1}
    with pytest.raises(UsageError, match="must hold a YAML mapping"):
        ec.load_yaml_mapping("- 1\n", "f")
    with pytest.raises(UsageError, match=r"malformed YAML in f, line 3"):
        ec.load_yaml_mapping("a: 1\nb: [\n", "f")


def test_diff_is_patronictls_and_coloured_only_on_request():
    diff = ec.unified_diff(ec.dump({"loop_wait": 10, "ttl": 30}), ec.dump({"loop_wait": 5, "ttl": 30}))
    assert diff == "--- \n+++ \n@@ -1,2 +1,2 @@\n-loop_wait: 10\n+loop_wait: 5\n ttl: 30\n"
    assert render_edit.render_diff(diff, color=False) == diff
    coloured = render_edit.render_diff(diff, color=True)
    assert "\x1b[31m-loop_wait: 10" in coloured and "\x1b[32m+loop_wait: 5" in coloured and "\x1b[36m@@" in coloured


def test_effects_list_restart_reload_and_overrides():
    dcs = FakeDcs()
    cluster = dcs.get_cluster(NS, "demo")
    after = ec.apply_pairs(cluster.config.data, ["postgresql.parameters.max_connections=200",
                                                  "postgresql.parameters.work_mem=8MB",
                                                  "postgresql.parameters.pg_x.y=1"])
    from ctl import pgsettings

    change = ec.plan_change(cluster, after, pgsettings.bundled(15), {"node1": {"work_mem": "16MB"}})
    assert change.restart_needed == ["max_connections"]
    text = render_edit.render_change_effects(change)
    assert "  max_connections  150 -> 200  (restart needed: members will show pending restart)\n" in text
    assert "  work_mem         (unset) -> 8MB  (reload)\n" in text
    assert "pg_x.y           (unset) -> 1  (not in the catalogue: effect unknown)" in text
    assert "Pending restart after this change: max_connections" in text
    assert "Overridden on node1 by its local patroni.yml: work_mem = 16MB (this change does not reach it)" in text
    assert "Local overrides on node2, node3: known only for node1 (the -c file)" in text
    assert "Parameters checked against: bundled PostgreSQL 15 table" in text


def test_local_parameters_only_from_a_members_own_file():
    cluster = FakeDcs().get_cluster(NS, "demo")
    node = build({"scope": "demo", "name": "node2", "etcd3": {"hosts": ["h:1"]},
                  "postgresql": {"parameters": {"work_mem": "1MB"}}}, "n.yml")
    assert ec.local_parameters_of(cluster, node) == {"node2": {"work_mem": "1MB"}}
    assert ec.local_parameters_of(cluster, CONFIG) == {}


def test_editor_command_order(monkeypatch):
    assert editor_command({"VISUAL": "code -w", "EDITOR": "nano"}) == ["code", "-w"]
    assert editor_command({"EDITOR": "nano"}) == ["nano"]
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(OperationFailed, match=r"no editor: set \$VISUAL or \$EDITOR"):
        editor_command({})


def test_effective_layers():
    cluster = FakeDcs().get_cluster(NS, "demo")
    node = build({"scope": "demo", "name": "node1", "etcd3": {"hosts": ["h:1"]},
                  "postgresql": {"parameters": {"work_mem": "1MB", "max_connections": 7}}}, "n.yml")
    eff = {v.key: (v.value, v.source) for v in ec.effective_config(cluster, "node1", node).values}
    assert eff["loop_wait"] == (10, "DCS") and eff["postgresql.parameters.work_mem"] == ("1MB", "local file")
    assert eff["postgresql.parameters.max_connections"] == (7, "local file")
    assert eff["postgresql.parameters.wal_level"][1] == "DCS"
    other = ec.effective_config(cluster, "node2", node)
    assert other.layers == ("DCS", "default") and "unknown" in other.note


def test_agent_defaults_copy_matches_the_agent():
    from ctl.agent.settings import DEFAULT_PARAMETERS
    from ctl.pg.conf import OWNED_BY_HACTL

    assert ec.AGENT_DEFAULT_PARAMETERS is DEFAULT_PARAMETERS  # one table, in ctl.dynconfig
    assert set(ec.AGENT_OWNED_PARAMETERS) == set(OWNED_BY_HACTL)


def test_parameters_the_agent_owns_are_shown_as_ignored():
    cluster = FakeDcs().get_cluster(NS, "demo")
    change = ec.plan_change(cluster, ec.apply_pairs(cluster.config.data, ["postgresql.parameters.port=6000"]), None)
    assert change.restart_needed == []
    assert "port  (unset) -> 6000  (ignored: each member's agent sets it itself)" in render_edit.render_change_effects(change)


# ----------------------------------------------------------------------------------------------- the command


def test_set_force_writes_with_cas():
    dcs = FakeDcs()
    rev = dcs.kv[dcs.config_key][1]
    r = run(["-s", "loop_wait=5", "--force"], dcs)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("--- \n+++ \n@@ -1,4 +1,4 @@\n-loop_wait: 10\n+loop_wait: 5\n")
    assert r.stdout.endswith("Configuration changed\n")
    assert dcs.config()["loop_wait"] == 5 and dcs.kv[dcs.config_key][1] > rev


def test_pg_and_quiet():
    dcs = FakeDcs()
    r = run(["-q", "-p", "work_mem=8MB", "-p", "max_connections=200", "--force"], dcs)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "Configuration changed\n"
    assert dcs.config()["postgresql"]["parameters"]["work_mem"] == "8MB"


def test_not_changed():
    dcs = FakeDcs()
    r = run(["-s", "loop_wait=10", "--force"], dcs)
    assert r.exit_code == 0 and r.stdout == "Not changed\n" and dcs.puts == []


def test_without_a_terminal_and_without_force_refuses_at_once():
    dcs = FakeDcs()
    r = run(["-s", "loop_wait=5"], dcs)
    assert r.exit_code == ExitCode.ABORTED
    assert "--force" in r.stderr and r.stdout == "" and dcs.puts == []


def test_invalid_values_are_all_listed_and_nothing_written():
    dcs = FakeDcs()
    r = run(["-s", "loop_wait=abc", "-s", "loop_wiat=5", "-p", "max_conections=5", "-p", "work_mem=8XB",
             "--force"], dcs)
    assert r.exit_code == ExitCode.REFUSED
    assert dcs.puts == []
    assert "Error: the new configuration is invalid; nothing written:\n" in r.stderr
    for problem in ("loop_wait must be an integer, got 'abc'", "unknown key loop_wiat; did you mean loop_wait?",
                    "postgresql.parameters.max_conections: unknown PostgreSQL 15 parameter; "
                    "did you mean max_connections?", "postgresql.parameters.work_mem has an invalid unit in '8XB'"):
        assert problem in r.stderr
    assert "--no-validate" in r.stderr


def test_no_validate_writes_anyway():
    dcs = FakeDcs()
    r = run(["-s", "loop_wait=abc", "--force", "--no-validate"], dcs)
    assert r.exit_code == 0, r.stderr
    assert dcs.config()["loop_wait"] == "abc"


def test_dry_run_shows_and_writes_nothing():
    dcs = FakeDcs()
    r = run(["-p", "max_connections=200", "--dry-run"], dcs)
    assert r.exit_code == 0, r.stderr
    assert "+    max_connections: 200" in r.stdout and "restart needed" in r.stdout
    assert r.stdout.endswith("Dry run: nothing written\n") and dcs.puts == []


def test_concurrent_change_is_a_conflict():
    dcs = FakeDcs()

    def someone_else(d: FakeDcs) -> None:
        d.revision += 1
        d.kv[d.config_key] = (d.kv[d.config_key][0], d.revision)

    dcs.before_put = someone_else
    r = run(["-s", "loop_wait=5", "--force"], dcs)
    assert r.exit_code == ExitCode.FAILED
    assert "the configuration changed underneath" in r.stderr and dcs.puts == []


def test_apply_from_stdin_and_replace(tmp_path):
    dcs = FakeDcs()
    r = run(["--apply", "-", "--force"], dcs, stdin="loop_wait: 7\npostgresql:\n  parameters:\n    work_mem: 8MB\n")
    assert r.exit_code == 0, r.stderr
    assert dcs.config()["loop_wait"] == 7 and dcs.config()["postgresql"]["parameters"]["work_mem"] == "8MB"
    f = tmp_path / "new.yaml"
    f.write_text("ttl: 30\nloop_wait: 10\nretry_timeout: 10\n")
    r = run(["--replace", str(f), "--force"], dcs)
    assert r.exit_code == 0, r.stderr
    assert dcs.config() == {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}


def test_missing_file_and_missing_config_key():
    r = run(["--apply", "/nonexistent.yaml", "--force"], FakeDcs())
    assert r.exit_code == ExitCode.USAGE and "cannot read --apply file" in r.stderr
    dcs = FakeDcs()
    del dcs.kv[dcs.config_key]
    r = run(["-s", "a=1", "--force"], dcs)
    assert r.exit_code == ExitCode.NOT_FOUND and "config key does not exist" in r.stderr


def test_show_config_effective():
    r = CliRunner().invoke(app, ["show-config", "--effective", "node1"],
                           obj={"config": CONFIG, "dcs": FakeDcs(), "rest": None}, env={})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "# effective configuration of node1; layers known: DCS, default"
    assert lines[1].startswith("# note: the local layer of node1 is unknown")
    assert any(ln.split() == ["loop_wait", "10", "DCS"] for ln in lines)
    r = CliRunner().invoke(app, ["show-config", "--effective", "node1", "-f", "json"],
                           obj={"config": CONFIG, "dcs": FakeDcs(), "rest": None}, env={})
    data = json.loads(r.stdout)
    assert {"key": "ttl", "value": 30, "source": "DCS"} in data["values"]
    r = CliRunner().invoke(app, ["show-config", "--effective", "nodeX"],
                           obj={"config": CONFIG, "dcs": FakeDcs(), "rest": None}, env={})
    assert r.exit_code == ExitCode.NOT_FOUND and "nodeX" in r.stderr


def test_catalogue_is_the_bundled_table_without_node_credentials():
    cluster = FakeDcs().get_cluster(NS, "demo")
    assert ec.load_catalogue(cluster, CONFIG, 1.0).source == "bundled PostgreSQL 15 table"
    empty = parse_cluster("demo", "/service/demo/", [], 1)  # no leader to ask
    node = build({"scope": "demo", "name": "node1", "etcd3": {"hosts": ["h:1"]},
                  "postgresql": {"parameters": {}}}, "n.yml")
    assert ec.load_catalogue(empty, node, 1.0).source == "bundled PostgreSQL 15 table"
