"""The callback executor: Patroni's argv, never blocking, the newest callback wins, on_reload has its own slot."""

from __future__ import annotations

import logging
import os
import time

import pytest

from ctl.agent.callbacks import Callbacks, callback_argv


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture()
def script(tmp_path):
    """A callback that appends its argv to a file, then sleeps for $CB_SLEEP_<action> seconds."""
    out = tmp_path / "argv.log"
    path = tmp_path / "cb.sh"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {out}\n'
        'act=$(echo "$*" | grep -o "on_[a-z_]*" | head -n1)\n'
        'eval "s=\\${CB_SLEEP_$act:-0}"\n'
        'echo "output of $act"\n'
        'sleep "$s" &\n'
        f'echo $! > {tmp_path}/child.$act\n'
        'wait\n'
        f'echo "done $*" >> {out}\n'
    )
    path.chmod(0o755)
    return path, out


def test_argv_is_the_command_line_then_action_role_scope():
    assert callback_argv("/bin/cb.sh --flag 'a b'", "on_start", "replica", "bars") == [
        "/bin/cb.sh", "--flag", "a b", "on_start", "replica", "bars"]
    assert callback_argv("cb", "on_role_change", "promoted", "bars")[-2] == "primary"
    with pytest.raises(ValueError):
        callback_argv("cb 'unbalanced", "on_start", "replica", "bars")


def test_fire_returns_at_once_and_the_callback_runs(script, monkeypatch, caplog):
    path, out = script
    monkeypatch.setenv("CB_SLEEP_on_start", "0.5")
    cb = Callbacks(lambda: {"on_start": f"{path} extra"}, "bars")
    with caplog.at_level(logging.INFO, logger="hactl.agent"):
        t0 = time.monotonic()
        cb.fire("on_start", "replica")
        assert time.monotonic() - t0 < 0.2
        assert _wait_for(lambda: "done extra on_start replica bars" in _lines(out))
        assert _wait_for(lambda: any("exited with 0" in r.getMessage() for r in caplog.records))
    cb.stop()
    assert _lines(out)[0] == "extra on_start replica bars"
    done = [r.getMessage() for r in caplog.records if "exited with 0" in r.getMessage()]
    assert "last output: output of on_start" in done[0]


def test_a_newer_callback_kills_the_running_one_with_its_children(script, monkeypatch):
    path, out = script
    monkeypatch.setenv("CB_SLEEP_on_stop", "30")
    cb = Callbacks(lambda: {"on_stop": str(path), "on_role_change": str(path)}, "bars")
    cb.fire("on_stop", "primary")
    assert _wait_for(lambda: "on_stop primary bars" in _lines(out))
    time.sleep(0.2)  # let the script reach its (child) sleep
    cb.fire("on_role_change", "replica")
    assert _wait_for(lambda: "done on_role_change replica bars" in _lines(out))
    cb.stop()
    assert "done on_stop primary bars" not in _lines(out)
    # the sleeping child of the killed script died with it
    pid = int((out.parent / "child.on_stop").read_text())
    assert _wait_for(lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_on_reload_runs_beside_a_running_role_change_and_does_not_kill_it(script, monkeypatch):
    path, out = script
    monkeypatch.setenv("CB_SLEEP_on_role_change", "1")
    cb = Callbacks(lambda: {"on_reload": str(path), "on_role_change": str(path)}, "bars")
    cb.fire("on_role_change", "primary")
    assert _wait_for(lambda: "on_role_change primary bars" in _lines(out))
    cb.fire("on_reload", "primary")
    assert _wait_for(lambda: "done on_role_change primary bars" in _lines(out))
    assert "done on_reload primary bars" in _lines(out)
    cb.stop()


def test_timeout_kills_a_hung_callback(script, monkeypatch, caplog):
    path, out = script
    monkeypatch.setenv("CB_SLEEP_on_restart", "30")
    cb = Callbacks(lambda: {"on_restart": str(path)}, "bars", timeout=lambda: 0.3)
    with caplog.at_level(logging.INFO, logger="hactl.agent"):
        cb.fire("on_restart", "replica")
        assert _wait_for(lambda: any("timed out" in r.getMessage() for r in caplog.records))
    cb.stop()
    assert "done on_restart replica bars" not in _lines(out)


def test_a_failing_callback_logs_its_exit_code_and_output(tmp_path, caplog):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho 'vip: no such interface' >&2\nexit 3\n")
    bad.chmod(0o755)
    cb = Callbacks(lambda: {"on_start": str(bad), "on_stop": str(tmp_path / "missing")}, "bars")
    with caplog.at_level(logging.INFO, logger="hactl.agent"):
        cb.fire("on_start", "primary")
        assert _wait_for(lambda: any("exited with 3" in r.getMessage() for r in caplog.records))
        cb.fire("on_stop", "primary")
        assert _wait_for(lambda: any("could not start" in r.getMessage() for r in caplog.records))
    cb.stop()
    msg = next(r.getMessage() for r in caplog.records if "exited with 3" in r.getMessage())
    assert "vip: no such interface" in msg


def test_unconfigured_callbacks_do_nothing(tmp_path):
    cb = Callbacks(lambda: {}, "bars")
    cb.fire("on_start", "primary")
    with pytest.raises(ValueError):
        cb.fire("on_nothing", "primary")
    cb.stop()
