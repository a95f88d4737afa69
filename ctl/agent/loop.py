"""The agent's loop: observe -> decide -> execute, once per loop_wait or at once on a DCS watch event.

The loop runs in the process's main thread and never waits on long work: base backups, pg_rewind, restarts and
starts run on the task runner (ctl/agent/taskrunner.py), and while one runs every iteration still reads the DCS,
renews the leader lock if held and keeps the member key alive with the task's state. PostgreSQL is guarded by a
fence process (ctl/pg/fence.py), so a killed agent takes its PostgreSQL down with it (fencing), except in pause:
the loop disarms the fence while the cluster is paused, and a stopping agent then leaves PostgreSQL running. REST handlers start tasks through `submit()`, which holds the cycle lock, so a task never starts in
the middle of an iteration that decided from the state before it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ctl import __version__
from ctl.agent import audit, dcsfail, member, scheduled
from ctl.agent import settings as st
from ctl.agent.callbacks import hooks_for, role_of
from ctl.agent.dynamic import DynamicConfigWatch
from ctl.agent.execute import Executor
from ctl.agent.failsafe import Failsafe
from ctl.agent.handoff import Handoff
from ctl.agent.node import NodeState
from ctl.agent.peers import fetch_peers
from ctl.agent.pgview import pg_view
from ctl.agent.taskrunner import TaskResult, TaskRunner
from ctl.config import Config
from ctl.dcs.codec import parse_member
from ctl.errors import CtlError, DcsUnavailable
from ctl.ha import handoff
from ctl.ha.actions import Decision, Kind
from ctl.ha.decide import decide
from ctl.ha.state import Observation
from ctl.model import Cluster, NodeStatus
from ctl.pg.process import kill_children

log = logging.getLogger("hactl.agent")

@dataclass
class _Request:
    """A quick request (reload) that the loop thread runs at the start of its next iteration."""

    kind: str
    done: threading.Event = field(default_factory=threading.Event)
    result: TaskResult | None = None


class Agent:
    def __init__(self, config: Config, dcs: Any, pg: Any, *, clock=time.monotonic) -> None:
        self.config = config
        self.name: str = config.name or ""
        self.scope: str = config.scope or ""
        self.dcs = dcs
        self.pg = pg
        self.clock = clock
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.paused = False  # the last known config.pause: the fence is disarmed while it is true
        self.node = NodeState(self.name, settings=st.ha_settings(config, None), hooks=hooks_for(config))
        self.failsafe = Failsafe(self)  # failsafe_mode (ctl/agent/failsafe.py)
        self.runner = TaskRunner(self.wake.set, kill_children)
        self.executor = Executor(config, self.node, dcs, pg, clock, self.runner)
        self.dynamic = DynamicConfigWatch(config, self.node, pg)
        self.handoff = Handoff(self.name, dcs, self._publish_now)  # a sync standby's nosync before it stops
        self.executor.tasks.handoff = self.handoff
        self.cycle_lock = threading.RLock()  # one HA iteration, or a REST request starting a task
        self._requests: "queue.Queue[_Request]" = queue.Queue()
        self._status = NodeStatus(name=self.name, scope=self.scope, version=__version__)
        self._last_reason: str | None = None
        self._last_streaming: float | None = None
        self._last_member: dict[str, Any] | None = None
        self._lease_id: int | None = None
        self.scheduled_restart: dict[str, Any] | None = None  # published in the member key, run when due
        self.quick_recheck = False
        rest = st.split_address(config.restapi.connect_address or config.restapi.listen, 8008, "restapi")
        pgaddr = st.split_address(config.postgresql.connect_address or config.postgresql.listen, 5432, "postgresql")
        self.api_url = f"{config.restapi.protocol}://{rest.host}:{rest.port}/patroni"
        self.conn_url = f"postgres://{pgaddr.host}:{pgaddr.port}/postgres"
        for method in st.replica_methods_ignored(config):
            log.warning("create_replica_methods: %s is not supported by hactl and is skipped (basebackup is used)",
                        method)

    # ------------------------------------------------------------------------------------------------ state
    # The REST handlers (ctl/agent/operations.py) read these; NodeState holds them.
    cluster = property(lambda self: self.node.cluster, lambda self, v: setattr(self.node, "cluster", v))
    settings = property(lambda self: self.node.settings, lambda self, v: setattr(self.node, "settings", v))
    good_config = property(lambda self: self.node.good_config, lambda self, v: setattr(self.node, "good_config", v))
    last_switchover_result = property(lambda self: self.node.last_switchover_result,
                                      lambda self, v: setattr(self.node, "last_switchover_result", v))
    upstream = property(lambda self: self.node.upstream)
    last_lock_renewal = property(lambda self: self.node.last_lock_renewal)
    _pg_state = property(lambda self: self.node.pg_state)  # the last probe (older callers read this name)

    @property
    def busy(self) -> str | None:
        """The running task's name (for `<name> already in progress`), or None."""
        return self.runner.busy

    def status(self) -> NodeStatus:
        """The loop's last status, with a running base backup's progress as of now (not as of the last cycle)."""
        status, progress = self._status, self.runner.progress
        if progress != (dict(status.basebackup) if status.basebackup else None):
            status = replace(status, basebackup=progress)
        return status

    def read_cluster(self) -> Cluster | None:
        return self.dcs.get_cluster()

    # ------------------------------------------------------------------------------------------------ requests
    def submit(self, kind: str, params: Mapping[str, Any] | None = None, *, wait: bool = True,
               timeout: float = 60.0) -> TaskResult:
        """Run a REST request: `reload` on the loop thread; `restart` and `reinitialize` (params: force) as a task.

        A task is refused with `<name> already in progress` while another runs, unless `force` cancels that one
        first. With wait, blocks until the task ended (or timeout); without, returns once it started.
        """
        params = dict(params or {})
        if kind == "reload":
            request = _Request(kind)
            self._requests.put(request)
            self.wake.set()
            if not request.done.wait(timeout):
                return TaskResult(False, f"{kind} did not start within {timeout:.0f}s")
            return request.result or TaskResult(True, "reload scheduled")
        if params.get("force") and self.runner.busy:
            self.runner.cancel()  # outside the cycle lock: the loop keeps renewing the lock and member key meanwhile
        if not self.cycle_lock.acquire(timeout=timeout):
            return TaskResult(False, f"{kind} did not start within {timeout:.0f}s: the HA loop is busy")
        try:
            if params.get("force") and self.runner.busy:
                self.runner.cancel(5.0)  # what the loop started in between (a fresh clone): ends at once
            job, refused = self.executor.request(kind, params)
        finally:
            self.cycle_lock.release()
        if job is None:
            return refused or TaskResult(False, f"{kind} not started")
        self.wake.set()  # publish the task's state now
        if not wait:
            return TaskResult(True, f"{kind} started")
        if not job.done.wait(timeout):
            return TaskResult(False, f"{kind} did not finish within {timeout:.0f}s")
        return job.result or TaskResult(False, f"{kind} failed")

    def _run_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                request.result = self.executor.reload()
            except CtlError as exc:
                request.result = TaskResult(False, f"{request.kind} failed: {exc}")
            finally:
                request.done.set()

    # ------------------------------------------------------------------------------------------------ loop
    def relevant_event(self, is_delete: bool, key: str, value: str) -> bool:
        """Which DCS changes wake the loop at once: not our own writes, not members' routine updates."""
        if key.startswith("members/"):
            # a member that was not there before (a new or rejoining node): the leader makes its slot at once
            known = {m.name for m in self.cluster.members} if self.cluster is not None else set()
            name = key[len("members/"):]
            if is_delete or name not in known:
                return not is_delete
            # a synchronous standby handing its role over (nosync): drop it now, not on the next tick
            return handoff.leader_wakes(self.cluster, self.name, parse_member(name, value))
        if key in ("status", "history") or key.startswith("hactl/"):  # hactl/audit/: nothing the loop acts on
            return False
        if key == "leader" and not is_delete and value == self.name:
            return False  # our own renewal
        return True

    def run(self) -> None:
        if hasattr(self.dcs, "set_watch_filter"):
            self.dcs.set_watch_filter(self.relevant_event)
        self.dcs.watch(self.wake.set)
        while not self.stopping.is_set():
            self.run_once()
            timeout = self.settings.loop_wait if self.cluster is not None else 1.0
            if self.quick_recheck:
                timeout = min(timeout, 1.0)
            self._sleep(timeout)
            self.wake.clear()
        self.shutdown()

    def _sleep(self, timeout: float) -> None:
        """Until woken, `timeout` passed, or the postmaster died (checked every 0.5 s without SQL): a crashed
        PostgreSQL is noticed within half a second, not on the next loop_wait tick as in Patroni."""
        deadline = time.monotonic() + timeout
        was_running = self.pg.is_running()
        while not self.wake.wait(max(0.0, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            if was_running and not self.runner.busy and not self.pg.is_running():
                log.warning("PostgreSQL is gone (postmaster exited)")
                return

    def run_once(self) -> Decision:
        with self.cycle_lock:
            self._run_requests()
            self._run_scheduled_restart()
            obs = self.observe()
            if obs.task is None:
                self.dynamic.apply()
            decision = self._decide_and_run(obs)
            self._after_actions()
            self._fence()
            self._publish(etcd_failed=dcsfail.failed(self.dcs))  # after a failed call: the status only
            if obs.dcs_ok and dcsfail.failed(self.dcs):
                obs, decision = self._handle_dcs_error()
        # after a change (start, promote, follow, step down ...) look again soon, so that state shows up quickly
        routine = {Kind.NOOP, Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS}
        pg = obs.pg
        settling = bool(pg.running and pg.in_recovery is not False and self.node.upstream and not pg.streaming)
        self.quick_recheck = settling or any(k not in routine for k in decision.kinds)
        return decision

    def _decide_and_run(self, obs: Observation) -> Decision:
        decision = decide(obs)
        if decision.reason != self._last_reason:
            log.info("%s", decision.reason)
            self._last_reason = decision.reason
        self.executor.run(decision)
        return decision

    def _handle_dcs_error(self) -> tuple[Observation, Decision]:
        """etcd went away after this iteration's read (a keepalive or a write found no endpoint): decide again
        without it now, as Patroni's `_handle_dcs_error`, so that a primary runs the failsafe exchange (or demotes)
        at once instead of after loop_wait and one more failed read (ctl/agent/dcsfail.py has the arithmetic)."""
        log.warning("DCS unreachable: etcd stopped answering during this iteration")
        obs = self.observe(read=False)
        decision = self._decide_and_run(obs)
        self._publish()  # the DCS is unreachable: the REST status only
        return obs, decision

    def _run_scheduled_restart(self) -> None:
        """A restart scheduled over REST (`POST /restart {"schedule": ...}`) starts here once it is due."""
        sched = self.scheduled_restart
        verdict = scheduled.check(sched, time.time(), member.role_name(self.node, self._self()), self.node.pg_state)
        if verdict is None:
            return
        self.scheduled_restart = None
        if verdict:
            log.info("scheduled restart skipped: %s", verdict)
            return
        log.info("restart initiated (scheduled)")
        job, refused = self.executor.request("restart", {"timeout": (sched or {}).get("timeout")})
        if job is None and refused is not None:
            log.error("scheduled restart not started: %s", refused.message)

    def observe(self, read: bool = True) -> Observation:
        """The iteration's view; `read=False`: etcd just failed, observe as if the read had failed."""
        now = self.clock()
        task = self.runner.busy  # before the probe: a task that starts later cannot hide behind it
        cluster = None
        try:
            cluster = self.dcs.get_cluster() if read else None
        except CtlError as exc:
            if self.cluster is not None:
                log.warning("DCS unreachable: %s", exc)
        self.cluster = cluster
        audit.pause_seen(self.dcs, self.name, cluster)
        if cluster is not None:
            self.dynamic.check(cluster)
            settings = st.ha_settings(self.config, self.good_config)
            timing = (settings.ttl, settings.loop_wait, settings.retry_timeout, settings.maximum_lag_on_failover)
            if timing != (self.settings.ttl, self.settings.loop_wait, self.settings.retry_timeout,
                          self.settings.maximum_lag_on_failover):
                log.info("now in effect: ttl %s, loop_wait %s, retry_timeout %s, maximum_lag_on_failover %s",
                         *timing)
            self.settings = settings
        state = self.pg.probe()
        self.node.pg_state = state
        if state.running and state.streaming:
            self._last_streaming = now
        pgv = pg_view(self.node, self.pg, state, now, task, self._last_streaming)
        peers = {}
        if cluster is not None and cluster.initialize and pgv.running and task is None:
            others = [m for m in cluster.members if m.name != self.name]
            pending = cluster.failover is not None and not cluster.failover.is_empty
            electing = cluster.leader is None and pgv.in_recovery and (not cluster.is_paused or pending)
            stepping_down = pending and cluster.leader is not None and cluster.leader.name == self.name
            if electing or stepping_down:
                peers = fetch_peers(others, timeout=1.0)
        return Observation(
            name=self.name,
            now=now,
            settings=self.settings,
            pg=pgv,
            cluster=cluster,
            last_lock_renewal=self.node.last_lock_renewal,
            peers=peers,
            wall_time=time.time(),
            task=task,
            failsafe=self.failsafe.observe(cluster, pgv),
        )

    def _after_actions(self) -> None:
        """Callbacks and failsafe bookkeeping that follow an iteration's actions."""
        node = self.node
        s = node.pg_state
        if s is not None and s.running and self.runner.busy is None:
            node.hooks.adopted(role_of(node))  # found running at start and no callback yet: on_start, as Patroni
        c = node.cluster
        if dcsfail.failed(self.dcs):
            return  # etcd went away during the actions: the DCS-error path runs next, without more timeouts
        if node.last_lock_renewal is not None and c is not None and c.leader is not None and c.leader.name == self.name:
            self.failsafe.after_renewal()  # the `failsafe` key, after a renewal (Patroni's update_leader)

    def _fence(self) -> None:
        """Pause means hands off: disarm the fence (ctl/pg/fence.py) while the cluster is paused, re-arm it on
        resume; a running postmaster without a fence (adopted at start) gets one. When etcd cannot be read the
        last known pause state holds; before the first read the fence is armed."""
        if self.cluster is not None:
            self.paused = self.cluster.is_paused
        try:
            self.pg.set_fence(not self.paused)
        except CtlError as exc:
            log.error("cannot fence PostgreSQL: %s", exc)

    # ------------------------------------------------------------------------------------------------ publish
    def _self(self) -> member.Self:
        runner = self.runner
        return member.Self(conn_url=self.conn_url, api_url=self.api_url, tags=self.handoff.tags(self.config.tags),
                           task_state=runner.state, task_progress=runner.progress,
                           scheduled_restart=self.scheduled_restart, data_dir_empty=self.pg.data_dir_empty(),
                           failsafe_active=self.failsafe.is_active())

    def _publish(self, etcd_failed: bool = False) -> None:
        """Keep our lease alive and our member key current; refresh the cached status for the REST API."""
        me = self._self()
        if self.cluster is not None and not etcd_failed:
            try:
                lease = self.dcs.ensure_lease(self.settings.ttl)
                if lease == self._lease_id:
                    if not self.dcs.refresh_lease():
                        if dcsfail.failed(self.dcs):  # one timeout is enough: the DCS-error path runs next
                            raise DcsUnavailable("etcd is unreachable (lease keepalive)")
                        lease = self.dcs.ensure_lease(self.settings.ttl)
                if lease != self._lease_id:
                    self._lease_id = lease
                    self._last_member = None
                data = member.member_data(self.node, me)
                if data != self._last_member and self.dcs.touch_member(self.name, data):
                    self._last_member = data
            except CtlError as exc:
                log.warning("cannot update member key: %s", exc)
        self._status = member.node_status(self._status, self.node, me)

    def _publish_now(self) -> bool:
        """Write our member key now, outside the loop's rhythm (the hand-off's nosync tag); False if not written."""
        if not self.cycle_lock.acquire(timeout=5.0):
            return False
        try:
            self._last_member = None
            self._publish()
            return self._last_member is not None
        finally:
            self.cycle_lock.release()

    # ------------------------------------------------------------------------------------------------ stop
    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def shutdown(self) -> None:
        """Graceful stop: cancel a running task (and kill its programs); a leader checkpoints and shuts
        PostgreSQL down, then releases the lock at once."""
        if self.runner.busy:
            log.info("shutting down: cancelling %s", self.runner.busy)
        self.runner.stop()
        if self.cluster is not None:
            self.paused = self.cluster.is_paused
        if self.paused:
            # Patroni's upgrade path (pause -> restart the agent -> resume): PostgreSQL keeps running, the leader
            # key stays (it is renewed by the restarted agent, or expires with our lease after ttl), the fence is
            # disarmed so that our exit does not stop PostgreSQL, and the next agent adopts it.
            if self.on_before_release is not None:
                self.on_before_release()
            try:
                self.pg.set_fence(False)
            except CtlError as exc:
                log.error("cannot disarm the fence: %s", exc)
            log.info("shutting down in pause: leader key not deleted, PostgreSQL left running")
            return
        leader = self.node.holds_lock_now()
        s = self.node.pg_state
        primary = bool(s is not None and s.running and s.in_recovery is False)
        if self.on_before_release is not None:
            self.on_before_release()
        try:
            if primary:
                log.info("shutting down: stopping primary PostgreSQL (checkpoint first)")
                self.pg.stop(mode="fast", checkpoint=True)
            else:
                log.info("shutting down: stopping PostgreSQL")
                self.handoff.around(lambda: self.pg.stop(mode="fast"), what="stopping PostgreSQL",
                                    settings=self.settings, configured=self.config.tags, is_leader=leader,
                                    known=self.node.cluster, running=bool(s is not None and s.running),
                                    keepalive=self.dcs.refresh_lease)
            self.node.hooks.stopped("primary" if primary else role_of(self.node))
            if self.node.hooks.callbacks is not None:
                self.node.hooks.callbacks.flush()  # on_stop must start before the agent exits
        except CtlError as exc:
            log.error("stopping PostgreSQL failed: %s", exc)
        if leader:
            try:
                if self.dcs.release_leader(self.name):
                    log.info("released leader lock")
            except CtlError as exc:
                log.warning("cannot release leader lock: %s", exc)
        try:
            self.node.pg_state = self.pg.probe()
            data = member.member_data(self.node, self._self())
            data["state"] = "stopped"
            self.dcs.touch_member(self.name, data)
        except CtlError:
            pass

    on_before_release: Any = None  # set by the runner: stops the REST API so peers see us as gone
