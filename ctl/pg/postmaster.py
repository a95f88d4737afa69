"""The postmaster process of one data directory, and how it is fenced to the agent.

FENCING. If the agent dies (kill -9) while its PostgreSQL is a primary, that primary must stop accepting writes,
or a promoted replica would give two writable primaries. hactl therefore does not daemonize PostgreSQL with
`pg_ctl start`: the postmaster (`postgres -D <data_dir>`) runs as a *direct child* of the agent. In the forked
child, CPython first drops privileges to the OS user (setgroups/setregid/setreuid from Popen's
user/group/extra_groups), then our preexec_fn sets `prctl(PR_SET_PDEATHSIG, SIGQUIT)` (after setuid, because a
credential change clears the death signal) and exits if `getppid()` shows the agent already died (ctl.pg.process).
When the agent dies for any reason the kernel sends SIGQUIT to the postmaster: an immediate shutdown that ends
every backend at once, so no further writes are acknowledged (tests/integration/test_pg.py: gone within ~2 s,
open sessions included).
  * PR_SET_PDEATHSIG fires when the *thread* that forked the postmaster exits, not only the process. The fork
    therefore always happens on one daemon "keeper" thread that lives as long as the agent process
    (ctl.pg.process.spawn_from_keeper), so start() may be called from any thread, a REST handler included.
  * The postmaster runs in its own session, so a Ctrl-C on the agent's terminal does not reach it: the agent
    decides how to shut it down.
  * stdout/stderr go to a log file (PostgreSQL's own logging_collector may take over after startup).
  * A postmaster hactl did not start (found through `postmaster.pid`, e.g. started by hand or by an agent that
    is still alive) is *adopted*: it can be signalled and stopped, but it is not fenced (`owns_process` False).
    A stale `postmaster.pid` (dead or recycled PID) is removed before a start.

Stopping signals the postmaster the way `pg_ctl stop -m` does (smart=SIGTERM, fast=SIGINT, immediate=SIGQUIT) and
waits for the PID to go: `wait()` for our child, polling for an adopted one (so an agent restarted after a crash
can still stop a server it finds). After the timeout it escalates to immediate. It never SIGKILLs the postmaster:
that would leave backends serving clients.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from ctl.errors import PgCommandError
from ctl.pg.binaries import binary
from ctl.pg.osuser import OsUser, chown
from ctl.pg.process import is_postmaster_of, pid_alive, read_postmaster_pid, spawn_from_keeper

log = logging.getLogger(__name__)

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class Postmaster:
    """The postmaster of `data_dir`: our fenced child, or an adopted one found through postmaster.pid."""

    def __init__(self, data_dir: str, log_file: str) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """Our child if alive, else a live postmaster of this data directory from postmaster.pid, else None."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                return proc.pid
            self._proc = None  # reaped by poll()
        pid = read_postmaster_pid(self.data_dir)
        if pid is not None and is_postmaster_of(pid, self.data_dir):
            return pid
        return None

    @property
    def owns_process(self) -> bool:
        """True when the running postmaster is our child, i.e. fenced by the parent-death signal."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def spawn(self, bin_dir: str, user: OsUser) -> int:
        """Start `postgres -D data_dir` as a fenced child; returns the log file offset where its output begins.

        Raises:
            PgCommandError: a postmaster already runs here, or the program could not be started.
        """
        if self.pid is not None:
            raise PgCommandError(f"a postmaster already runs on {self.data_dir} (pid {self.pid})")
        stale = os.path.join(self.data_dir, "postmaster.pid")
        if os.path.exists(stale):
            log.info("removing stale postmaster.pid from %s", self.data_dir)
            os.unlink(stale)
        offset = _file_size(self.log_file)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            chown(self.log_file, user)
            self._proc = spawn_from_keeper([binary(bin_dir, "postgres"), "-D", self.data_dir], user, stdout=fd,
                                           death_signal=signal.SIGQUIT)
        finally:
            os.close(fd)
        return offset

    def exit_code(self) -> int | None:
        """The exit code of our child if it has exited (it is then forgotten), else None."""
        proc = self._proc
        if proc is None:
            return None
        code = proc.poll()
        if code is not None:
            self._proc = None
        return code

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> bool:
        """Send `sig` to the postmaster; False when none runs.

        Raises:
            PgCommandError: the postmaster belongs to another user.
        """
        pid = self.pid
        if pid is None:
            return False
        _kill(pid, sig)
        return True

    def stop(self, mode: str, timeout: float) -> None:
        """Signal the shutdown `mode` and wait until the postmaster is gone; escalate to immediate after `timeout`.

        Raises:
            PgCommandError: an unknown mode, or the postmaster survived an immediate shutdown.
        """
        if mode not in STOP_SIGNALS:
            raise PgCommandError(f"unknown shutdown mode {mode!r} (smart, fast, immediate)")
        pid = self.pid
        if pid is None:
            return
        log.info("stopping PostgreSQL (pid %s, mode %s)", pid, mode)
        _kill(pid, STOP_SIGNALS[mode])
        if self._wait_gone(pid, timeout):
            return
        if mode != "immediate":
            log.warning("PostgreSQL (pid %s) did not stop within %gs: immediate shutdown", pid, timeout)
            _kill(pid, signal.SIGQUIT)
            if self._wait_gone(pid, 15):
                return
        raise PgCommandError(f"PostgreSQL (pid {pid}) did not stop")

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def _kill(pid: int, sig: int) -> None:
    """Raises: PgCommandError when the postmaster belongs to another user (we are not root)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise PgCommandError(f"not allowed to signal PostgreSQL (pid {pid}): it runs as another user") from None


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
