"""edit-config as whole `hactl` processes against a real etcd seeded with a Patroni 4.1.5 cluster's keys.

Covers the scripted paths (--set, --pg, --apply -, --replace FILE), refusals that must leave the config key
byte-for-byte unchanged, a concurrent change between read and write, and the real $EDITOR path in a
pseudo-terminal (pexpect): one confirmed and one declined edit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ctl.config import EtcdSettings
from ctl.dcs import keys
from ctl.dcs.gateway import EtcdGateway
from ctl.errors import ExitCode
from tests.support.patroni_dumps import load_dump

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gateway(etcd) -> EtcdGateway:
    return EtcdGateway(EtcdSettings(hosts=(("127.0.0.1", etcd.client_port),)), timeout=5)


def raw_config(etcd, namespace: str) -> tuple[str, int]:
    """The config key exactly as stored: its value bytes and mod_revision."""
    with gateway(etcd) as g:
        kvs, _ = g.get_prefix(keys.key(namespace, "demo", keys.CONFIG))
    assert len(kvs) == 1
    return kvs[0].value, kvs[0].mod_revision


def stored(etcd, namespace: str) -> dict:
    return json.loads(raw_config(etcd, namespace)[0])


@pytest.fixture
def cluster(etcd, namespace, tmp_path) -> str:
    """A seeded `demo` cluster and a patronictl-style config file (no postgresql section: bundled pg_settings)."""
    kvs, _ = load_dump("dcs_sync_mode")
    with gateway(etcd) as g:
        for kv in kvs:
            g.put(keys.key(namespace, "demo", kv.key[len("/service/demo/"):]), kv.value)
    path = tmp_path / "patronictl.yaml"
    path.write_text(f"scope: demo\nnamespace: {namespace}\netcd3:\n  hosts:\n    - {etcd.hostport}\n")
    return str(path)


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PATRONI", "PATRONICTL", "DCS_URL", "VISUAL", "EDITOR"))}
    env.update(extra or {})
    return env


def hactl(config: str, *args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m ctl -c CONFIG ARGS`; stdin is a pipe (never a terminal) holding `stdin`."""
    return subprocess.run([sys.executable, "-m", "ctl", "-c", config, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=_env(env))


def editor_script(tmp_path, race: bool = False) -> str:
    """An $EDITOR that sets loop_wait to $NEW_LOOP_WAIT; with `race`, it also rewrites the config key in etcd
    while "editing" (as another operator would), so the edit-config write must lose the compare-and-set."""
    script = tmp_path / ("race_editor.py" if race else "editor.py")
    script.write_text(textwrap.dedent(f"""
        import os, sys
        path = sys.argv[1]
        text = open(path).read().replace("loop_wait: 10", "loop_wait: " + os.environ.get("NEW_LOOP_WAIT", "5"))
        open(path, "w").write(text)
        once = os.environ.get("RACE_ONCE")  # with it, race only the first time the editor opens
        if {race!r} and not (once and os.path.exists(once)):
            if once:
                open(once, "w").close()
            sys.path.insert(0, {REPO!r})
            from ctl.config import EtcdSettings
            from ctl.dcs.gateway import EtcdGateway
            with EtcdGateway(EtcdSettings(hosts=(("127.0.0.1", int(os.environ["RACE_PORT"])),))) as g:
                g.put(os.environ["RACE_KEY"], os.environ["RACE_VALUE"])
    """))
    return f"{sys.executable} {script}"


# ----------------------------------------------------------------------------------------------- scripted


def test_set_loop_wait_force_is_stored(cluster, etcd, namespace) -> None:
    value, rev = raw_config(etcd, namespace)
    proc = hactl(cluster, "edit-config", "--set", "loop_wait=5", "--force")
    assert proc.returncode == 0, proc.stderr
    # patronictl's output for the same command (edit_config_set_loop_wait.txt), plus hactl's effects lines
    assert proc.stdout.startswith("--- \n+++ \n@@ -1,4 +1,4 @@\n-loop_wait: 10\n+loop_wait: 5\n")
    assert proc.stdout.endswith("Configuration changed\n") and "\x1b[" not in proc.stdout
    new_value, new_rev = raw_config(etcd, namespace)
    assert new_rev > rev and json.loads(new_value) == {**json.loads(value), "loop_wait": 5}
    assert "," in new_value and ", " not in new_value  # compact JSON, as Patroni writes it
    proc = hactl(cluster, "edit-config", "--set", "loop_wait=5", "--force")
    assert proc.returncode == 0 and proc.stdout == "Not changed\n"
    assert raw_config(etcd, namespace)[1] == new_rev


def test_pg_parameters_and_effects(cluster, etcd, namespace) -> None:
    proc = hactl(cluster, "edit-config", "-p", "work_mem=8MB", "-p", "max_connections=200", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "max_connections  150 -> 200  (restart needed: members will show pending restart)" in proc.stdout
    assert "work_mem         (unset) -> 8MB  (reload)" in proc.stdout
    params = stored(etcd, namespace)["postgresql"]["parameters"]
    assert params["work_mem"] == "8MB" and params["max_connections"] == 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "loop_wait=abc"], ["loop_wait must be an integer, got 'abc'"]),
        (["--set", "ttl=15", "--set", "loop_wait=1", "--set", "retry_timeout=3"], ["ttl must be >= 20, got 15"]),
        (["--set", "loop_wait=25"], ["loop_wait + 2*retry_timeout must be <= ttl (25 + 2*10 > 30)"]),
        (["--set", "maximum_lag_on_failover=-1"], ["maximum_lag_on_failover must be >= 0, got -1"]),
        (["--set", "synchronous_mode=maybe"], ["synchronous_mode must be one of false, true, on, off, quorum"]),
        (["--set", "loop_wiat=5"], ["unknown key loop_wiat; did you mean loop_wait?"]),
        (["-p", "max_conections=100", "-p", "work_mem=8XB", "-p", "wal_level=hot", "-p", "max_connections=0"],
         ["did you mean max_connections?", "work_mem has an invalid unit in '8XB'",
          "wal_level must be one of minimal, replica, logical", "max_connections must be between 1 and 262143"]),
    ],
)
def test_invalid_values_leave_the_dcs_byte_for_byte_unchanged(cluster, etcd, namespace, args, expected) -> None:
    before = raw_config(etcd, namespace)
    proc = hactl(cluster, "edit-config", *args, "--force")
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert proc.stderr.startswith("Error: the new configuration is invalid; nothing written:\n")
    assert raw_config(etcd, namespace) == before


def test_no_terminal_without_force_refuses_and_writes_nothing(cluster, etcd, namespace) -> None:
    before = raw_config(etcd, namespace)
    proc = hactl(cluster, "edit-config", "--set", "loop_wait=5")
    assert proc.returncode == ExitCode.ABORTED and "--force" in proc.stderr and proc.stdout == ""
    assert raw_config(etcd, namespace) == before


def test_dry_run_writes_nothing(cluster, etcd, namespace) -> None:
    before = raw_config(etcd, namespace)
    proc = hactl(cluster, "edit-config", "-p", "shared_buffers=256MB", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "shared_buffers" in proc.stdout and "restart needed" in proc.stdout
    assert proc.stdout.endswith("Dry run: nothing written\n")
    assert raw_config(etcd, namespace) == before


def test_apply_stdin_and_replace_file(cluster, etcd, namespace, tmp_path) -> None:
    proc = hactl(cluster, "edit-config", "--apply", "-", "--force",
                 stdin="loop_wait: 7\npostgresql:\n  parameters:\n    work_mem: 16MB\n    wal_log_hints: null\n")
    assert proc.returncode == 0, proc.stderr
    data = stored(etcd, namespace)
    assert data["loop_wait"] == 7 and data["postgresql"]["parameters"]["work_mem"] == "16MB"
    assert "wal_log_hints" not in data["postgresql"]["parameters"] and data["postgresql"]["use_slots"] is True
    new = tmp_path / "replacement.yaml"
    new.write_text("ttl: 30\nloop_wait: 10\nretry_timeout: 10\npostgresql:\n  parameters:\n    max_connections: 100\n")
    proc = hactl(cluster, "edit-config", "--replace", str(new), "--force", "-s", "loop_wait=8")
    assert proc.returncode == 0, proc.stderr
    assert stored(etcd, namespace) == {"ttl": 30, "loop_wait": 8, "retry_timeout": 10,
                                       "postgresql": {"parameters": {"max_connections": 100}}}


def test_concurrent_change_between_read_and_write(cluster, etcd, namespace, tmp_path) -> None:
    key = keys.key(namespace, "demo", keys.CONFIG)
    theirs = json.dumps({**stored(etcd, namespace), "ttl": 40})
    proc = hactl(cluster, "edit-config", "--force",
                 env={"EDITOR": editor_script(tmp_path, race=True), "RACE_KEY": key, "RACE_VALUE": theirs,
                      "RACE_PORT": str(etcd.client_port)})
    assert proc.returncode == ExitCode.FAILED, proc.stdout + proc.stderr
    assert "the configuration changed underneath" in proc.stderr and "nothing was written" in proc.stderr
    assert "Configuration changed" not in proc.stdout
    assert raw_config(etcd, namespace)[0] == theirs  # their write stands, ours was not made


def test_editor_failure_writes_nothing(cluster, etcd, namespace) -> None:
    before = raw_config(etcd, namespace)
    proc = hactl(cluster, "edit-config", "--force", env={"EDITOR": "false"})
    assert proc.returncode == ExitCode.FAILED and "exited with return code 1; nothing written" in proc.stderr
    proc = hactl(cluster, "edit-config", "--force", env={"EDITOR": "/nonexistent/editor"})
    assert proc.returncode == ExitCode.FAILED and "cannot start the editor" in proc.stderr
    assert raw_config(etcd, namespace) == before


# ----------------------------------------------------------------------------------------------- interactive


def _spawn(config: str, tmp_path, env: dict):
    pexpect = pytest.importorskip("pexpect")
    env = _env({"EDITOR": editor_script(tmp_path), "TERM": "xterm", **env})
    env.pop("NO_COLOR", None)
    return pexpect.spawn(sys.executable, ["-m", "ctl", "-c", config, "edit-config"], cwd=REPO, env=env,
                         encoding="utf-8", timeout=30, dimensions=(50, 200))


def test_interactive_editor_confirmed(cluster, etcd, namespace, tmp_path) -> None:
    child = _spawn(cluster, tmp_path, {"NEW_LOOP_WAIT": "4"})
    child.expect(r"Apply these changes\? \[y/N\]: ")
    shown = child.before
    assert "loop_wait: 10" in shown and "loop_wait: 4" in shown
    assert "\x1b[31m" in shown and "\x1b[32m" in shown  # coloured on a terminal
    child.sendline("y")
    child.expect("Configuration changed")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    assert stored(etcd, namespace)["loop_wait"] == 4


def test_interactive_editor_declined(cluster, etcd, namespace, tmp_path) -> None:
    before = raw_config(etcd, namespace)
    child = _spawn(cluster, tmp_path, {"NEW_LOOP_WAIT": "3"})
    child.expect(r"Apply these changes\? \[y/N\]: ")
    child.sendline("n")
    child.expect("not applied; nothing written")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == ExitCode.ABORTED
    assert raw_config(etcd, namespace) == before


@pytest.mark.parametrize(("value", "message"), [("abc", "loop_wait must be an integer, got 'abc'"),
                                              ("[", "malformed YAML in the edited configuration")])
def test_interactive_invalid_edit_offers_to_reopen(cluster, etcd, namespace, tmp_path, value, message) -> None:
    before = raw_config(etcd, namespace)
    child = _spawn(cluster, tmp_path, {"NEW_LOOP_WAIT": value})
    child.expect(message)
    child.expect(r"Re-open the editor\? \[y/N\]: ")
    child.sendline("n")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == ExitCode.ABORTED
    assert raw_config(etcd, namespace) == before


def test_interactive_conflict_reopens_the_editor_on_the_current_config(cluster, etcd, namespace, tmp_path) -> None:
    key = keys.key(namespace, "demo", keys.CONFIG)
    theirs = json.dumps({**stored(etcd, namespace), "ttl": 40})
    once = str(tmp_path / "raced")
    child = _spawn(cluster, tmp_path, {"EDITOR": editor_script(tmp_path, race=True), "RACE_KEY": key,
                                       "RACE_VALUE": theirs, "RACE_PORT": str(etcd.client_port),
                                       "RACE_ONCE": once})
    child.expect(r"Apply these changes\? \[y/N\]: ")
    child.sendline("y")
    child.expect("the configuration changed underneath")
    child.expect(r"Re-open the editor on the current configuration\? \[y/N\]: ")
    child.sendline("y")
    child.expect(r"Apply these changes\? \[y/N\]: ")
    child.sendline("y")
    child.expect("Configuration changed")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    data = stored(etcd, namespace)
    assert data["ttl"] == 40 and data["loop_wait"] == 5  # their change kept, ours made on top of it


def pexpect_eof():
    import pexpect

    return pexpect.EOF


def test_show_config_effective(cluster, etcd, namespace, tmp_path) -> None:
    node = tmp_path / "node1.yml"
    node.write_text(f"scope: demo\nname: node1\nnamespace: {namespace}\netcd3:\n  hosts:\n    - {etcd.hostport}\n"
                    "postgresql:\n  parameters:\n    work_mem: 32MB\n")
    proc = hactl(str(node), "show-config", "--effective", "node1", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    values = {v["key"]: (v["value"], v["source"]) for v in data["values"]}
    assert data["layers"] == ["DCS", "local file", "default"]
    assert values["postgresql.parameters.work_mem"] == ("32MB", "local file")
    assert values["loop_wait"] == (10, "DCS")
    # an edit of a locally overridden parameter says so
    start = time.monotonic()
    proc = hactl(str(node), "edit-config", "-p", "work_mem=8MB", "--dry-run")
    assert time.monotonic() - start < 20
    assert "Overridden on node1 by its local patroni.yml: work_mem = 32MB" in proc.stdout
