"""The fence: a tiny process that stops the postmaster when the agent dies, unless the agent disarmed it (pause).

Why a separate process. A postmaster with PR_SET_PDEATHSIG dies with the agent, always: in maintenance mode
(pause) a restart of the agent (an upgrade, `systemctl restart`) would then restart PostgreSQL, and a death signal
cannot be cleared from outside the child. So the postmaster runs without one, and this process watches the agent:

  * The agent creates a pipe and starts the fence (`python -I -S -c <this file> ...`, stdlib only, ~15 ms) with
    the read end; only the agent holds the write end. Both ends are close-on-exec and the fence gets its end
    through `pass_fds`, so no postmaster, pg_basebackup or pg_rewind ever inherits the write end.
  * When the agent dies in any way, kill -9 included, the kernel closes the write end and the fence reads EOF at
    once. As belt and braces the fence also has PR_SET_PDEATHSIG (SIGURG) on the agent's long-lived keeper
    thread (ctl.pg.process), which covers a write end that leaked anyway.
  * Then, if armed, it checks that the PID is still this data directory's postmaster (not a recycled PID) and
    sends SIGQUIT: PostgreSQL's immediate shutdown, which ends every backend at once. It exits in any case.
  * The agent talks to it over the same pipe, one command per write: `A` arm, `D` disarm, `P<pid>\\n` the
    postmaster's PID, `Q` quit quietly (the postmaster was stopped on purpose). Commands arrive in order and
    before the EOF, so a disarm written before the agent died is always obeyed.
  * The fence exits by itself when its postmaster is gone (checked every second).

The fence starts before the postmaster it guards (so there is no unfenced moment; if the agent dies before it
could send the PID, the fence reads it from postmaster.pid), and a restarted agent starts a new fence for a
postmaster it adopts. It runs as the agent's user (root may signal the OS user's postmaster; the OS user may not
be able to read this file or the Python binary).

The agent side is `Fence`; the fence side is `main()`. This file imports only the standard library at module
level, because the fence runs it without site-packages.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost the fence ~10 ms at start
if TYPE_CHECKING:
    from typing import Callable

# The death signal's default action must be "ignore": it may arrive while the fence's Python is still starting,
# before the handler exists (SIGUSR1 would then kill the fence unfenced; seen under load). The getppid() check
# after installing the handler catches that case.
_DEATH_SIGNAL = signal.SIGURG
_POLL = 1.0  # seconds between checks that the postmaster still exists


# --------------------------------------------------------------------------------------------- PIDs (stdlib only)


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie (an orphaned, exited postmaster may linger as one)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def read_postmaster_pid(data_dir: str) -> int | None:
    """The PID in `postmaster.pid`, or None when the file is missing or unreadable."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as f:
            first = f.readline().strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def is_postmaster_of(pid: int, data_dir: str) -> bool:
    """True when `pid` is a live postgres process serving `data_dir` (not a recycled PID)."""
    if not pid_alive(pid):
        return False
    try:
        # The postmaster chdir()s into its data directory; this is readable for root and for the owner.
        return os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == os.path.realpath(data_dir)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            exe = f.read().split(b"\0", 1)[0]
        return os.path.basename(exe).startswith((b"postgres", b"postmaster"))
    except OSError:
        return True  # cannot tell; assume it is, never start a second postmaster on the same data


# --------------------------------------------------------------------------------------------- the fence process


class _AgentGone(Exception):
    pass


def _say(message: str) -> None:
    try:
        sys.stderr.write(time.strftime("%Y-%m-%d %H:%M:%S") + f" hactl fence (pid {os.getpid()}): {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    """argv: read_fd agent_pid data_dir armed(0|1)."""
    fd, agent_pid, data_dir, armed = int(argv[0]), int(argv[1]), argv[2], argv[3] == "1"

    gone = [False]  # set before every raise, so the death signal arriving after the EOF cannot raise twice

    def agent_gone() -> None:
        gone[0] = True
        raise _AgentGone()

    def on_death_signal(signum: int, frame: object) -> None:  # noqa: ARG001
        if not gone[0] and os.getppid() != agent_pid:  # a stray SIGURG from someone else changes nothing
            agent_gone()

    signal.signal(_DEATH_SIGNAL, on_death_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid: int | None = None
    buf = b""
    try:
        if os.getppid() != agent_pid:
            agent_gone()
        while True:
            ready, _, _ = select.select([fd], [], [], _POLL)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    agent_gone()
                buf += data
                while buf:
                    cmd, buf = buf[:1], buf[1:]
                    if cmd == b"A":
                        armed = True
                    elif cmd == b"D":
                        armed = False
                    elif cmd == b"Q":
                        gone[0] = True
                        return 0
                    elif cmd == b"P":
                        if b"\n" not in buf:
                            buf = cmd + buf  # the rest of the line is still on its way
                            break
                        line, buf = buf.split(b"\n", 1)
                        pid = int(line)
            elif pid is not None and not pid_alive(pid):
                gone[0] = True
                return 0  # the postmaster is gone: nothing left to guard
            if os.getppid() != agent_pid:
                agent_gone()
    except _AgentGone:
        pass
    signal.signal(_DEATH_SIGNAL, signal.SIG_IGN)
    if not armed:
        _say(f"the agent is gone; disarmed (pause): leaving PostgreSQL on {data_dir} running")
        return 0
    target = pid
    if target is None:  # the agent died between starting the postmaster and telling us its PID
        deadline = time.monotonic() + 3
        while target is None and time.monotonic() < deadline:
            target = read_postmaster_pid(data_dir)
            if target is None:
                time.sleep(0.05)
    if target is not None and is_postmaster_of(target, data_dir):
        try:
            os.kill(target, signal.SIGQUIT)
            _say(f"the agent is gone: sent SIGQUIT (immediate shutdown) to postmaster {target} of {data_dir}")
        except OSError as exc:
            _say(f"the agent is gone; cannot signal postmaster {target}: {exc}")
    else:
        _say(f"the agent is gone; no postmaster of {data_dir} to stop")
    return 0


# --------------------------------------------------------------------------------------------- the agent's side


class Fence:
    """The agent's handle on one fence process (see the module docstring)."""

    def __init__(self, proc: "object", write_fd: int, armed: bool) -> None:
        self._proc = proc
        self._fd: int | None = write_fd
        self.armed = armed
        self.pid: int | None = None  # the postmaster it guards, once told

    @classmethod
    def start(cls, data_dir: str, armed: bool, log_fd: int, spawn_from_keeper: "Callable[..., object]") -> "Fence":
        """Start a fence for the postmaster of `data_dir` (not told its PID yet).

        `spawn_from_keeper` is ctl.pg.process.spawn_from_keeper, passed in because this file may import only the
        standard library (and ctl.pg.process imports the PID helpers above from here).

        Raises:
            PgCommandError: the fence could not be started.
        """
        with open(__file__, encoding="utf-8") as f:
            source = f.read()
        read_fd, write_fd = os.pipe()  # both close-on-exec: no other child inherits them
        try:
            argv = [os.path.realpath(sys.executable), "-I", "-S", "-c", source, str(read_fd), str(os.getpid()),
                    os.path.realpath(data_dir), "1" if armed else "0"]
            proc = spawn_from_keeper(argv, None, stdout=log_fd, death_signal=_DEATH_SIGNAL, pass_fds=(read_fd,))
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        return cls(proc, write_fd, armed)

    @property
    def process_pid(self) -> int:
        return int(self._proc.pid)  # type: ignore[attr-defined]

    @property
    def alive(self) -> bool:
        return self._fd is not None and self._proc.poll() is None  # type: ignore[attr-defined]

    def guard(self, pid: int) -> None:
        if self._send(b"P%d\n" % pid):
            self.pid = pid

    def arm(self, armed: bool) -> None:
        if armed != self.armed and self._send(b"A" if armed else b"D"):
            self.armed = armed

    def close(self) -> None:
        """Let the fence exit without acting (the postmaster was stopped on purpose, or is gone)."""
        self._send(b"Q")
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        try:
            self._proc.wait(timeout=2)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - it exits on its own within a second; poll() reaps it later
            pass

    def _send(self, message: bytes) -> bool:
        fd = self._fd
        if fd is None:
            return False
        try:
            os.write(fd, message)
            return True
        except OSError:  # the fence died (EPIPE): the caller notices through `alive` and starts a new one
            return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
