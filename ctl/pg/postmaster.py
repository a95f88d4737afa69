"""The postmaster process of one data directory, and how it is fenced to the agent.

FENCING. If the agent dies (kill -9) while its PostgreSQL is a primary, that primary must stop accepting writes,
or a promoted replica would give two writable primaries. Unless the cluster is paused: then the agent must keep
its hands off, and an agent restart (an upgrade) must leave PostgreSQL running (Patroni's upgrade path).

So the postmaster (`postgres -D <data_dir>`, not `pg_ctl start`) runs as the agent's child, in its own session,
*without* a parent-death signal, and a fence process (ctl.pg.fence) watches the agent for it: it holds the read
end of a pipe whose write end only the agent holds, reads EOF the moment the agent dies in any way, and then, if
armed, sends the postmaster SIGQUIT (immediate shutdown: every backend ends at once; measured in
tests/integration/test_pg.py). The agent disarms the fence in pause and re-arms it on resume (`set_fence`).
  * The fence starts before the postmaster, so there is no unfenced moment.
  * A postmaster hactl did not start (found through `postmaster.pid`: left running by an agent that stopped in
    pause, or started by hand) is *adopted*: it can be signalled and stopped, and `set_fence` starts a fence for
    it too, so an adopted postmaster is fenced like our own child (`fenced`; `owns_process` says whether it is
    our child). A stale `postmaster.pid` (dead or recycled PID) is removed before a start.
  * The postmaster runs in its own session, so a Ctrl-C on the agent's terminal does not reach it: the agent
    decides how to shut it down.
  * stdout/stderr (the fence's too) go to a log file (PostgreSQL's logging_collector may take over after start).

Stopping signals the postmaster the way `pg_ctl stop -m` does (smart=SIGTERM, fast=SIGINT, immediate=SIGQUIT) and
waits for the PID to go: `wait()` for our child, polling for an adopted one. After the timeout it escalates to
immediate. It never SIGKILLs the postmaster: that would leave backends serving clients.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

from ctl.errors import PgCommandError
from ctl.pg.binaries import binary
from ctl.pg.fence import Fence, is_postmaster_of, pid_alive, read_postmaster_pid
from ctl.pg.osuser import OsUser, chown
from ctl.pg.process import spawn, spawn_from_keeper

log = logging.getLogger(__name__)

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class Postmaster:
    """The postmaster of `data_dir`: our child, or an adopted one found through postmaster.pid; fenced either way."""

    def __init__(self, data_dir: str, log_file: str) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self._proc: subprocess.Popen | None = None
        self._fence: Fence | None = None
        self._armed = True  # what the agent wants: False in pause (hands off, even if the agent dies)
        self._fence_lock = threading.Lock()

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
        """True when the running postmaster is our child (started by this agent, not adopted)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def fenced(self) -> bool:
        """True when a live fence guards the running postmaster (armed or not: see `fence_armed`)."""
        fence, pid = self._fence, self.pid
        return fence is not None and pid is not None and fence.alive and fence.pid == pid

    @property
    def fence_pid(self) -> int | None:
        """The PID of the fence process, if one runs (diagnostics and tests)."""
        fence = self._fence
        return fence.process_pid if fence is not None and fence.alive else None

    @property
    def fence_armed(self) -> bool:
        return self._armed

    def set_fence(self, armed: bool) -> None:
        """Arm (outside pause) or disarm (pause) the fence, and make sure a running postmaster has one: a new fence
        for an adopted postmaster or after the old fence died; none once the postmaster is gone.

        Raises:
            PgCommandError: a fence could not be started.
        """
        with self._fence_lock:
            self._armed = armed
            fence, pid = self._fence, self.pid
            if pid is None:
                if fence is not None:
                    self._fence = None
                    fence.close()
                return
            if fence is not None and fence.alive and fence.pid == pid:
                if fence.armed != armed:
                    fence.arm(armed)
                    log.info("fence %s for postmaster %s", "armed" if armed else "disarmed (pause)", pid)
                return
            if fence is not None:
                fence.close()
            self._fence = None
            fence = self._start_fence()
            fence.guard(pid)
            self._fence = fence
            log.info("fence %s for postmaster %s (%s)", "armed" if armed else "disarmed (pause)", pid,
                     "our child" if self.owns_process else "adopted")

    def _start_fence(self) -> Fence:
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            return Fence.start(self.data_dir, self._armed, fd, spawn_from_keeper)
        finally:
            os.close(fd)

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
        with self._fence_lock:
            if self._fence is not None:
                self._fence.close()
            # The fence first: from its first instruction on, the postmaster is fenced.
            self._fence = self._start_fence()
            fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                chown(self.log_file, user)
                self._proc = spawn([binary(bin_dir, "postgres"), "-D", self.data_dir], user, stdout=fd,
                                   death_signal=None)
            except BaseException:
                self._fence.close()
                self._fence = None
                raise
            finally:
                os.close(fd)
            self._fence.guard(self._proc.pid)
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
            self._drop_fence()
            return
        if mode != "immediate":
            log.warning("PostgreSQL (pid %s) did not stop within %gs: immediate shutdown", pid, timeout)
            _kill(pid, signal.SIGQUIT)
            if self._wait_gone(pid, 15):
                self._drop_fence()
                return
        raise PgCommandError(f"PostgreSQL (pid {pid}) did not stop")

    def _drop_fence(self) -> None:
        with self._fence_lock:
            fence, self._fence = self._fence, None
        if fence is not None:
            fence.close()

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
