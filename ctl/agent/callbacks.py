"""`postgresql.callbacks`: run an operator's script on on_start/on_stop/on_restart/on_reload/on_role_change.

Patroni's contract (argv `shlex.split(cmd) + [action, role, scope]`, fire and forget, a newer callback kills an
older one that still runs, `on_reload` in a slot of its own so that it never kills an `on_role_change`) with three
improvements:

- each callback runs in its own session, and killing it kills the whole process group at once (Patroni walks the
  descendants of the script, which misses a grandchild that was re-parented before the walk);
- its exit code and the last lines of its output go to the agent's log (Patroni discards both);
- an optional timeout (`postgresql.callbacks_timeout` seconds) kills a callback that hangs (Patroni waits forever,
  and a hung `on_role_change` then only dies when the next callback fires).

`fire()` never blocks: it records the request and returns; one worker thread per slot runs it.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from typing import Callable, Mapping

log = logging.getLogger("hactl.agent")

ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")
TAIL_LINES = 5


def callback_argv(command: str, action: str, role: str, scope: str) -> list[str]:
    """Patroni's argv: the configured command line split like a shell, then action, role and scope.

    Raises:
        ValueError: an unbalanced quote in the command line.
    """
    return shlex.split(command) + [action, "primary" if role == "promoted" else role, scope]


class _Slot:
    """One callback at a time: the newest request wins, and a running older one is killed."""

    def __init__(self, name: str, timeout: Callable[[], float | None]) -> None:
        self.name = name
        self._timeout = timeout
        self._cond = threading.Condition()
        self._pending: list[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._starting = False
        self._thread = threading.Thread(target=self._work, name=f"callbacks-{name}", daemon=True)
        self._thread.start()

    def submit(self, argv: list[str]) -> None:
        with self._cond:
            self._pending = argv
            self._kill_locked("a newer callback was requested")
            self._cond.notify()

    def flush(self, timeout: float) -> None:
        """Wait (bounded) until a requested callback has been started, e.g. on_stop before the agent exits."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending is not None or self._starting) and time.monotonic() < deadline:
                self._cond.wait(0.05)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._pending = None
            self._cond.notify()

    def _kill_locked(self, why: str) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the callback runs in its own session: its group is its tree
            log.warning("killed callback %s (pid %s) because it was still running: %s", _show(proc.args), proc.pid,
                        why)
        except PermissionError:
            log.warning("cannot kill callback %s (pid %s): waiting for it to finish", _show(proc.args), proc.pid)
        except ProcessLookupError:
            pass

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                argv, self._pending = self._pending, None
                self._starting = True
            self._run(argv)

    def _run(self, argv: list[str]) -> None:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    close_fds=True, start_new_session=True)
        except OSError as exc:
            log.error("callback %s could not start: %s", _show(argv), exc.strerror or exc)
            with self._cond:
                self._starting = False
                self._cond.notify_all()
            return
        with self._cond:
            self._proc = proc
            self._starting = False
            self._cond.notify_all()
            if self._pending is not None:  # a newer request arrived while this one was starting
                self._kill_locked("a newer callback was requested")
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        reader = threading.Thread(target=_read_tail, args=(proc, tail), daemon=True)
        reader.start()
        started = time.monotonic()
        timeout = self._timeout()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with self._cond:
                self._kill_locked(f"timed out after {timeout:g}s")
            proc.wait()
        reader.join(1.0)  # a grandchild that escaped the process group may hold the pipe: do not wait for it
        with self._cond:
            self._proc = None
        elapsed = time.monotonic() - started
        output = " | ".join(line for line in tail if line)
        rc = proc.returncode
        level = logging.INFO if rc == 0 else logging.WARNING
        what = "timed out" if timed_out else ("was killed" if rc is not None and rc < 0 else f"exited with {rc}")
        log.log(level, "callback %s %s after %.1fs%s", _show(argv), what, elapsed,
                f"; last output: {output}" if output else "")


def _read_tail(proc: subprocess.Popen[bytes], tail: collections.deque[str]) -> None:
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            tail.append(raw.decode("utf-8", "replace").rstrip()[:300])
    except (OSError, ValueError):
        pass
    finally:
        try:
            proc.stdout.close()
        except OSError:
            pass


def _show(argv: object) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv) if isinstance(argv, (list, tuple)) else str(argv)


class Callbacks:
    """The agent's callback executor: `fire(action, role)` returns at once."""

    def __init__(self, commands: Callable[[], Mapping[str, object]], scope: str,
                 timeout: Callable[[], float | None] = lambda: None) -> None:
        self._commands = commands  # read at each call, so a reloaded configuration takes effect (as in Patroni)
        self._scope = scope
        self._main = _Slot("main", timeout)
        self._reload = _Slot("on_reload", timeout)  # on_reload never kills another callback, nor is killed by one

    def fire(self, action: str, role: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown callback {action}")
        command = self._commands().get(action)
        if not command or not isinstance(command, str):
            return
        try:
            argv = callback_argv(command, action, role, self._scope)
        except ValueError as exc:
            log.error("postgresql.callbacks.%s: cannot parse %r: %s", action, command, exc)
            return
        log.info("calling callback %s", _show(argv))
        (self._reload if action == "on_reload" else self._main).submit(argv)

    def flush(self, timeout: float = 2.0) -> None:
        self._main.flush(timeout)
        self._reload.flush(timeout)

    def stop(self) -> None:
        self._main.stop()
        self._reload.stop()


class CallbackHooks:
    """When each callback fires, from what the executor just did (Patroni's Postgresql.role bookkeeping).

    `role` is the role of the last callback: a start in a different role than the last known one is a role change
    (`on_role_change`), a start in the same role (or the first start) is `on_start`; a reload that changes the
    role (a replica that became the standby leader) is `on_role_change`, otherwise `on_reload`.
    """

    def __init__(self, callbacks: Callbacks | None) -> None:
        self.callbacks = callbacks
        self.role: str | None = None
        self.fired = False

    def _fire(self, action: str, role: str) -> None:
        self.fired = True
        self.role = role
        if self.callbacks is not None:
            self.callbacks.fire(action, role)

    def started(self, role: str) -> None:
        changed = self.role not in (None, "uninitialized", role)
        self._fire("on_role_change" if changed else "on_start", role)

    def stopped(self, role: str) -> None:
        self._fire("on_stop", role)

    def restarted(self, role: str) -> None:
        self._fire("on_restart", role)

    def promoted(self) -> None:
        self._fire("on_role_change", "primary")

    def reloaded(self, role: str) -> None:
        changed = self.role not in (None, "uninitialized", role)
        self._fire("on_role_change" if changed else "on_reload", role)

    def adopted(self, role: str) -> None:
        """The loop found PostgreSQL running and no callback has fired yet (Patroni's _run_cycle on_start)."""
        if not self.fired:
            self._fire("on_start", role)


def hooks_for(config: object) -> CallbackHooks:
    """Hooks for the agent; a Callbacks executor (two threads) only when `postgresql.callbacks` is configured.

    `postgresql.callback_timeout` (seconds, hactl only; Patroni has none) kills a callback that runs longer.
    """
    raw = getattr(config, "raw", {}) or {}
    pg = raw.get("postgresql") if isinstance(raw.get("postgresql"), Mapping) else {}
    commands = pg.get("callbacks") if isinstance(pg.get("callbacks"), Mapping) else {}
    if not commands:
        return CallbackHooks(None)
    try:
        timeout = float(pg["callback_timeout"]) if pg.get("callback_timeout") not in (None, "") else None
    except (TypeError, ValueError):
        log.error("postgresql.callback_timeout: not a number: %r (no timeout)", pg.get("callback_timeout"))
        timeout = None
    timeout = timeout if timeout and timeout > 0 else None
    return CallbackHooks(Callbacks(lambda: commands, str(getattr(config, "scope", "") or ""), lambda: timeout))


def role_of(node: object) -> str:
    """The role to pass to a callback from what the agent knows now (a NodeState)."""
    from ctl.ha.standby import REMOTE

    s = getattr(node, "pg_state", None)
    if s is None or not getattr(s, "running", False) or getattr(s, "in_recovery", None) is None:
        return "replica"
    if not s.in_recovery:
        return "primary"
    holds = getattr(node, "holds_lock_now", lambda: False)()
    return "standby_leader" if holds and getattr(node, "upstream", None) == REMOTE else "replica"
