"""Starting PostgreSQL programs as the OS user, with a parent-death signal, and inspecting postmaster PIDs.

Every program is started with Popen(user=, group=, extra_groups=) when we are root. CPython applies those in the
forked child (setgroups, setregid, setreuid) *before* it calls `preexec_fn`, and our `preexec_fn` then sets
`prctl(PR_SET_PDEATHSIG, sig)`: the kernel clears the death signal on credential changes, so it must come after
the uid switch. It then compares `os.getppid()` with the PID of the parent that forked it: if the parent already
died between fork and prctl, the child exits at once instead of running unfenced.

PostgreSQL tools (pg_basebackup, pg_rewind, initdb, ...) get SIGTERM as their death signal. The postmaster gets
none (ctl.pg.postmaster): the fence process (ctl.pg.fence) stops it when the agent dies, unless the cluster is
paused. The death signal fires when the *thread* that forked the child exits, not only the process. So that a
fence started from a short-lived thread (a task, a REST request handler) is not stopped when that thread ends,
`spawn_from_keeper()` forks on one daemon thread that lives as long as the process. The PID helpers live in
ctl.pg.fence (which must run on the standard library alone) and are re-exported here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import threading
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

from ctl.errors import PgCommandError
from ctl.pg.fence import is_postmaster_of, pid_alive, read_postmaster_pid
from ctl.pg.osuser import OsUser

__all__ = ["spawn", "spawn_from_keeper", "run", "cancellable", "kill_children", "child_env", "output_tail",
           "is_postmaster_of", "pid_alive", "read_postmaster_pid"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _death_signal_hook(sig: int, parent_pid: int):
    """A preexec_fn: ask for `sig` when our parent (thread) dies; exit if it already has."""

    def hook() -> None:
        # Runs in the forked child: keep it tiny, no allocation-heavy work, no logging.
        if _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent_pid:
            os._exit(125)

    return hook


def child_env(extra: Mapping[str, str] | None = None, user: OsUser | None = None) -> dict[str, str]:
    """Our environment without libpq variables (PGHOST, PGPASSWORD, ... would redirect or leak), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if user is not None and user.switch:
        env["HOME"] = user.home if user.home and os.path.isdir(user.home) else "/"
        env["USER"] = env["LOGNAME"] = user.name
    env.update(extra or {})
    return env


def _user_kwargs(user: OsUser | None) -> dict:
    if user is None or not user.switch:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def spawn(
    argv: Sequence[str],
    user: OsUser | None,
    *,
    stdout: IO | int | None,
    death_signal: int | None = signal.SIGQUIT,
    env: Mapping[str, str] | None = None,
    stdin: IO | int | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen:
    """Start `argv` as `user` (None: as ourselves), in its own session (a Ctrl-C on the agent's terminal does not
    reach it), with a parent-death signal unless `death_signal` is None. Every file descriptor but stdio and
    `pass_fds` is closed in the child. The caller owns the returned child and must wait() for it.

    Raises:
        PgCommandError: the program could not be started.
    """
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            cwd="/",  # the agent's cwd (e.g. /root) may be unreadable for the OS user; PG tools getcwd()
            env=dict(env) if env is not None else child_env(user=user),
            start_new_session=True,
            preexec_fn=_death_signal_hook(death_signal, os.getpid()) if death_signal is not None else None,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            **_user_kwargs(user),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgCommandError(f"cannot start {os.path.basename(argv[0])}: {exc}") from None


class _Keeper:
    """One daemon thread that runs the forks of long-lived children, so their death signal means "the agent
    process died" and never "the calling thread ended"."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="hactl-postmaster-parent", daemon=True)
                self._thread.start()
        done = threading.Event()
        box: dict[str, Any] = {}
        self._requests.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _serve(self) -> None:
        while True:
            fn, box, done = self._requests.get()
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                box["error"] = exc
            finally:
                done.set()


_keeper = _Keeper()
_children_lock = threading.Lock()
_children: dict[int, set[int]] = {}  # thread ident -> PIDs of the programs run() waits for on that thread
_scope = threading.local()  # .cancelled: the cancel flag of the task this thread runs (cancellable())


@contextlib.contextmanager
def cancellable(cancelled: Callable[[], bool]) -> Iterator[None]:
    """Programs that run() starts on this thread inside the block are killed at once when `cancelled()` is true
    after they were registered for kill_children(). This closes the race of a cancel that comes just before the
    program starts: kill_children() found nothing to kill, and the program would have run to its end."""
    previous = getattr(_scope, "cancelled", None)
    _scope.cancelled = cancelled
    try:
        yield
    finally:
        _scope.cancelled = previous


def spawn_from_keeper(argv: Sequence[str], user: OsUser | None, *, stdout: IO | int | None,
                      death_signal: int = signal.SIGQUIT, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """spawn() on the long-lived keeper thread: the child gets `death_signal` only when the agent process dies.

    Raises:
        PgCommandError: the program could not be started.
    """
    return _keeper.call(lambda: spawn(argv, user, stdout=stdout, death_signal=death_signal, pass_fds=pass_fds))


def run(
    argv: Sequence[str],
    user: OsUser,
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
    stdin_data: str | None = None,
    on_output: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program to completion as `user`; stdout and stderr are captured (merged).

    On timeout the whole process group is killed. The return code is not checked. With `on_output`, each line
    of output is handed over as it comes (no stdin then). The program can be killed from another thread with
    `kill_children(<this thread's ident>)`.

    Raises:
        PgCommandError: the program could not be started or did not finish within `timeout`.
    """
    proc = spawn(
        argv, user, stdout=subprocess.PIPE, death_signal=signal.SIGTERM, env=env,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
    )
    me = threading.get_ident()
    with _children_lock:
        _children.setdefault(me, set()).add(proc.pid)
    cancelled = getattr(_scope, "cancelled", None)
    if cancelled is not None and cancelled():  # cancelled before we were registered: kill_children missed us
        _kill_group(proc.pid)
    try:
        if on_output is not None:
            out = _read_lines(proc, timeout, on_output)
        else:
            out, _ = proc.communicate(stdin_data.encode() if stdin_data is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise PgCommandError(f"{os.path.basename(argv[0])} did not finish within {timeout:g}s") from None
    finally:
        with _children_lock:
            _children.get(me, set()).discard(proc.pid)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode("utf-8", "replace"), "")


def _read_lines(proc: subprocess.Popen, timeout: float, on_output: Callable[[str], None]) -> bytes:
    """Read the output as it comes, calling `on_output` per line (a carriage return ends a line too)."""
    chunks: list[bytes] = []

    def reader() -> None:
        pending = b""
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            chunks.append(chunk)
            pending += chunk
            *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        on_output(line.decode("utf-8", "replace"))
                    except Exception:  # noqa: BLE001 - a progress callback never breaks the program
                        pass

    thread = threading.Thread(target=reader, name="hactl-output-reader", daemon=True)
    thread.start()
    proc.wait(timeout=timeout)
    thread.join(5)
    return b"".join(chunks)


def kill_children(thread_ident: int) -> None:
    """SIGKILL the process groups of the programs that `run()` runs on that thread (cancelling a task)."""
    with _children_lock:
        pids = list(_children.get(thread_ident, ()))
    for pid in pids:
        _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def output_tail(text: str, lines: int = 5) -> str:
    """The last non-empty lines of a program's output, joined on one line for an error message."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"
