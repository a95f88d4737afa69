"""ctl.pg.process / ctl.pg.osuser helpers that need no child process."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from ctl.errors import PgCommandError
from ctl.pg.osuser import OsUser, check_reachable
from ctl.pg.process import child_env, is_postmaster_of, output_tail, pid_alive, read_postmaster_pid

STRANGER = OsUser("stranger", 54321, 54321, (54321,), "/nonexistent", switch=True)


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    assert not pid_alive(2**22 + 12345)  # above pid_max on Linux


def test_read_postmaster_pid(tmp_path):
    assert read_postmaster_pid(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("4242\n/data\n1700000000\n5432\n")
    assert read_postmaster_pid(str(tmp_path)) == 4242
    (tmp_path / "postmaster.pid").write_text("")
    assert read_postmaster_pid(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert read_postmaster_pid(str(tmp_path)) is None


def test_is_postmaster_of_checks_the_working_directory(tmp_path):
    # this test process is alive but its cwd is not tmp_path: a recycled PID is not taken for a postmaster
    assert not is_postmaster_of(os.getpid(), str(tmp_path))
    assert is_postmaster_of(os.getpid(), os.getcwd())
    assert not is_postmaster_of(2**22 + 12345, str(tmp_path))


def test_child_env_drops_libpq_variables(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "leak")
    monkeypatch.setenv("PGHOST", "elsewhere")
    env = child_env({"PGPASSFILE": "/x/pgpass"}, STRANGER)
    assert "PGPASSWORD" not in env and "PGHOST" not in env
    assert env["PGPASSFILE"] == "/x/pgpass"
    assert env["USER"] == "stranger" and env["HOME"] == "/"


def test_output_tail():
    assert output_tail("a\n\nb\nc\n", 2) == "b | c"
    assert output_tail("") == "(no output)"


@pytest.fixture
def public_dir():
    """A 0755 directory straight under the temp dir (pytest's tmp_path sits below a 0700 directory)."""
    path = tempfile.mkdtemp(prefix="hactl-unit-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_check_reachable(public_dir):
    tmp_path = public_dir
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    check_reachable(str(open_dir / "data"), STRANGER)
    closed = tmp_path / "closed"
    closed.mkdir()
    os.chmod(closed, 0o700)
    with pytest.raises(PgCommandError, match=r"cannot reach .*closed has mode 0700.*chmod o\+x"):
        check_reachable(str(closed / "data"), STRANGER)
    # not switching users (not root): nothing to check
    check_reachable(str(closed / "data"), OsUser("me", os.getuid(), os.getgid(), (), "/", switch=False))
