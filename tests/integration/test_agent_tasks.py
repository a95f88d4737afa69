"""Long tasks of the agent on real programs and a real cluster: cancelling kills the task's programs; a throttled
base backup runs longer than ttl while the member key stays and a second reinitialize is refused."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from ctl.agent.taskrunner import TaskResult, TaskRunner

pytestmark = pytest.mark.integration


def test_cancel_kills_the_programs_of_the_task_and_waits_for_it():
    from ctl.pg.osuser import resolve_os_user
    from ctl.pg.process import kill_children, run

    runner = TaskRunner(lambda: None, kill_children)
    started = threading.Event()

    def long_program(job):
        started.set()
        proc = run(["sleep", "30"], resolve_os_user(None), timeout=60)
        job.check()
        return TaskResult(proc.returncode == 0, "slept")

    job, _ = runner.try_start("reinitialize", "creating replica", long_program)
    assert started.wait(5)
    time.sleep(0.3)  # let the child start
    began = time.monotonic()
    assert runner.cancel(timeout=10)
    assert time.monotonic() - began < 5
    assert not job.result.ok and "cancelled" in job.result.message
    assert runner.busy is None
    out = subprocess.run(["pgrep", "-f", "^sleep 30$", "-P", str(os.getpid())], capture_output=True)
    assert out.stdout.strip() == b""
    runner.stop()
