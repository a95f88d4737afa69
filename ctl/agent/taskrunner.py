"""The agent's task runner: one action slot and one long-lived worker thread (Patroni's AsyncExecutor idea).

Long work (a base backup, pg_rewind, a restart, starting PostgreSQL and waiting for it) runs here, never on the HA
loop, so the loop keeps reading the DCS, renewing the leader lock and the member key while it runs. There is one
slot: a second task is refused with `<name> already in progress` (Patroni's message), unless the caller cancels
the running one first. A task that ends wakes the loop.

The worker is one thread for the life of the agent: the programs a task runs (pg_basebackup, pg_rewind) get a
parent-death signal tied to the thread that forked them, so they must not be forked from short-lived threads.
Cancelling kills the process groups of the programs the worker thread runs (`kill_children`, injected), then
waits for the task to return. Nothing here knows about PostgreSQL or the DCS.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("hactl.agent")


@dataclass(frozen=True)
class TaskResult:
    ok: bool
    message: str


class Cancelled(Exception):
    """Raised inside a task (by `Job.check()`) once the task was cancelled."""


@dataclass
class Job:
    """One task: its name (for `<name> already in progress`), the member state it shows, and its outcome."""

    name: str
    state: str
    fn: Callable[["Job"], TaskResult]
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: TaskResult | None = None
    progress: dict[str, Any] | None = None  # e.g. {"done_bytes": .., "total_bytes": ..} of a base backup

    def check(self) -> None:
        """Raises: Cancelled when the task was cancelled (call between steps)."""
        if self.cancelled.is_set():
            raise Cancelled(f"{self.name} cancelled")


class TaskRunner:
    """One action slot, one worker thread. Thread-safe: the loop and REST handlers call it."""

    def __init__(self, wake: Callable[[], None], kill_children: Callable[[int], None] | None = None) -> None:
        self._wake = wake
        self._kill_children = kill_children or (lambda ident: None)
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._jobs: "queue.SimpleQueue[Job | None]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ident: int | None = None

    # ------------------------------------------------------------------------------------------ state
    @property
    def job(self) -> Job | None:
        return self._job

    @property
    def busy(self) -> str | None:
        """The running task's name, or None."""
        job = self._job
        return job.name if job is not None else None

    @property
    def state(self) -> str | None:
        """The member state the running task shows (`creating replica`, `restarting`, ...), or None."""
        job = self._job
        return job.state if job is not None else None

    @property
    def progress(self) -> dict[str, Any] | None:
        job = self._job
        return dict(job.progress) if job is not None and job.progress else None

    # ------------------------------------------------------------------------------------------ control
    def try_start(self, name: str, state: str, fn: Callable[[Job], TaskResult]) -> tuple[Job | None, str | None]:
        """Run `fn(job)` on the worker; (job, None), or (None, "<running> already in progress")."""
        with self._lock:
            if self._job is not None:
                return None, f"{self._job.name} already in progress"
            job = Job(name, state, fn)
            self._job = job
            self._ensure_worker()
        self._jobs.put(job)
        return job, None

    def set_state(self, state: str) -> None:
        job = self._job
        if job is not None:
            job.state = state

    def cancel(self, timeout: float = 15.0) -> bool:
        """Cancel the running task: flag it, kill the programs it runs, wait for it to return. True when idle."""
        job = self._job
        if job is None:
            return True
        log.info("cancelling %s", job.name)
        job.cancelled.set()
        if self._ident is not None:
            self._kill_children(self._ident)
        finished = job.done.wait(timeout)
        if not finished:
            log.warning("%s did not end within %.0fs of being cancelled", job.name, timeout)
        return finished

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel the running task and end the worker (agent shutdown)."""
        self.cancel(timeout)
        if self._thread is not None:
            self._jobs.put(None)

    # ------------------------------------------------------------------------------------------ worker
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="hactl-task-runner", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        self._ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.check()
                job.result = job.fn(job)
            except Cancelled as exc:
                job.result = TaskResult(False, str(exc))
            except Exception as exc:  # noqa: BLE001 - a task's failure is its result, the worker lives on
                if job.cancelled.is_set():  # its program was killed by the cancel: not an error of the task
                    log.info("%s cancelled (%s)", job.name, exc)
                    job.result = TaskResult(False, f"{job.name} cancelled")
                else:
                    log.error("%s failed: %s", job.name, exc, exc_info=not _is_ctl_error(exc))
                    job.result = TaskResult(False, f"{job.name} failed: {exc}")
            finally:
                if job.result is None:
                    job.result = TaskResult(False, f"{job.name} ended without a result")
                with self._lock:
                    self._job = None
                job.done.set()
                self._wake()


def _is_ctl_error(exc: BaseException) -> bool:
    from ctl.errors import CtlError

    return isinstance(exc, CtlError)
