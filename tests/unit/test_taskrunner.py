"""The task runner: one slot, a refusal with Patroni's message, cancel, and a wake-up when a task ends."""

from __future__ import annotations

import threading

from ctl.agent.taskrunner import TaskResult, TaskRunner


def test_one_slot_refuses_a_second_task_with_patronis_message():
    woke = threading.Event()
    runner = TaskRunner(woke.set)
    release = threading.Event()
    job, refused = runner.try_start("reinitialize", "creating replica",
                                    lambda j: (release.wait(5), TaskResult(True, "ok"))[1])
    assert refused is None and runner.busy == "reinitialize" and runner.state == "creating replica"
    second, refused = runner.try_start("restart", "restarting", lambda j: TaskResult(True, "ok"))
    assert second is None and refused == "reinitialize already in progress"
    release.set()
    assert job.done.wait(5) and job.result == TaskResult(True, "ok")
    assert woke.wait(1), "a finished task wakes the loop"
    assert runner.busy is None and runner.state is None
    runner.stop()


def test_a_failing_task_reports_and_the_worker_lives_on():
    runner = TaskRunner(lambda: None)

    def boom(job):
        raise ValueError("disk on fire")

    job, _ = runner.try_start("restart", "restarting", boom)
    assert job.done.wait(5) and not job.result.ok and "disk on fire" in job.result.message
    job, _ = runner.try_start("restart", "restarting", lambda j: TaskResult(True, "fine"))
    assert job.done.wait(5) and job.result.ok
    runner.stop()
