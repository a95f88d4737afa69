"""The fence process's command protocol (ctl/pg/fence.py main()), run in-process on a pipe; no subprocesses."""

from __future__ import annotations

import os
import signal

import pytest

from ctl.pg import fence


@pytest.fixture
def run(capsys):
    saved = {s: signal.getsignal(s) for s in (signal.SIGURG, signal.SIGINT)}

    def go(commands: bytes, armed: bool, data_dir: str) -> tuple[int, str]:
        r, w = os.pipe()
        os.write(w, commands)
        os.close(w)  # the agent is gone: EOF after the commands
        try:
            code = fence.main([str(r), str(os.getppid()), data_dir, "1" if armed else "0"])
        finally:
            os.close(r)
        return code, capsys.readouterr().err

    yield go
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _dead_pid() -> int:
    return 4194304 + 1  # above the largest pid_max Linux allows: no such process


def test_disarmed_fence_leaves_postgres_alone(run, tmp_path):
    code, err = run(b"P%d\nD" % _dead_pid(), True, str(tmp_path))
    assert code == 0 and "disarmed (pause): leaving PostgreSQL" in err


def test_rearmed_fence_acts_but_never_on_a_pid_that_is_not_the_postmaster(run, tmp_path):
    # armed -> disarmed -> armed again; the PID is gone (or recycled): nothing is signalled
    code, err = run(b"DAP%d\n" % _dead_pid(), False, str(tmp_path))
    assert code == 0 and f"no postmaster of {tmp_path} to stop" in err


def test_quit_means_the_postmaster_was_stopped_on_purpose(run, tmp_path):
    code, err = run(b"P1\nQ", True, str(tmp_path))
    assert code == 0 and err == ""


def test_pid_helpers(tmp_path):
    assert fence.read_postmaster_pid(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert fence.read_postmaster_pid(str(tmp_path)) == os.getpid()
    assert fence.pid_alive(os.getpid()) and not fence.pid_alive(_dead_pid())
    assert not fence.is_postmaster_of(os.getpid(), str(tmp_path))  # our cwd is not that directory
