"""The agent's loop: observe -> decide -> execute, once per loop_wait or at once on a DCS watch event.

The loop runs in the process's main thread. PostgreSQL is a child of the agent with a parent-death signal (see
ctl/pg/postmaster.py), so a killed agent takes its PostgreSQL down with it (fencing). REST handlers do not act on
PostgreSQL themselves: they queue a Task that the loop runs between two iterations, so one thread decides and acts.
"""

from __future__ import annotations

import logging
import threading
import time
import queue
from dataclasses import replace
from typing import Any, Mapping

from ctl import __version__
from ctl.agent import settings as st
from ctl.agent.execute import Executor
from ctl.agent.peers import fetch_peers
from ctl.agent.tasks import Task, TaskResult
from ctl.config import Config
from ctl.errors import CtlError
from ctl.ha.actions import Decision, Kind
from ctl.ha.decide import decide
from ctl.ha.state import HaSettings, Observation, PgView, Replica
from ctl.dynconfig import validate_dynamic_config
from ctl.model import Cluster, DynamicConfig, NodeStatus

log = logging.getLogger("hactl.agent")




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
        self.cluster: Cluster | None = None
        self.settings: HaSettings = st.ha_settings(config, None)
        self.executor = Executor(self)
        self._status = NodeStatus(name=self.name, scope=self.scope, version=__version__)
        self._last_reason: str | None = None
        self._last_streaming: float | None = None
        self._last_member: dict[str, Any] | None = None
        self._lease_id: int | None = None
        self._checked_config_revision: int | None = None
        self.good_config: DynamicConfig | None = None  # the last valid `config` key
        self.last_lock_renewal: float | None = None
        self.upstream: str | None = None
        self.follow_since: float = 0.0
        self.start_failed = False
        self._pg_state: Any = None
        self.tasks: "queue.Queue[Task]" = queue.Queue()
        self.busy: str | None = None  # the task the loop is running, for "<action> already in progress"
        self.scheduled_restart: dict[str, Any] | None = None  # published in the member key, run when due
        self.last_switchover_result: str | None = None  # why the leader refused/cleared a switchover request
        self.quick_recheck = False
        self.sync_names: str | None = None  # synchronous_standby_names chosen by the leader (None: configured)
        self.sync_ready_lsn: int | None = None  # WAL position when that choice was in effect (ctl.agent.sync)
        self._applied_config_revision: int | None = None
        self._applied_params: dict[str, Any] | None = None
        self._applied_hba: tuple[str, ...] | None = None
        rest = st.split_address(config.restapi.connect_address or config.restapi.listen, 8008, "restapi")
        pgaddr = st.split_address(config.postgresql.connect_address or config.postgresql.listen, 5432, "postgresql")
        self.api_url = f"{config.restapi.protocol}://{rest.host}:{rest.port}/patroni"
        self.conn_url = f"postgres://{pgaddr.host}:{pgaddr.port}/postgres"

    # ------------------------------------------------------------------------------------------------ status
    def status(self) -> NodeStatus:
        return self._status

    def read_cluster(self) -> Cluster | None:
        return self.dcs.get_cluster()

    # ------------------------------------------------------------------------------------------------ requests
    def submit(self, kind: str, params: Mapping[str, Any] | None = None, *, wait: bool = True,
               timeout: float = 60.0) -> TaskResult:
        """Queue a task for the loop thread and wake it; with wait, block until it finished (or timeout).

        Without wait, returns once the loop has started the task. Kinds: `restart` (params: timeout),
        `reload`, `reinitialize` (params: from_leader).
        """
        task = Task(kind, dict(params or {}))
        self.tasks.put(task)
        self.wake.set()
        event = task.done if wait else task.started
        if not event.wait(timeout):
            return TaskResult(False, f"{kind} did not {'finish' if wait else 'start'} within {timeout:.0f}s")
        return task.result or TaskResult(True, f"{kind} started")

    def _run_tasks(self) -> None:
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                return
            self.busy = task.kind
            task.started.set()
            try:
                task.result = self.executor.run_task(task.kind, task.params)
            except CtlError as exc:
                task.result = TaskResult(False, f"{task.kind} failed: {exc}")
            finally:
                self.busy = None
                task.done.set()

    # ------------------------------------------------------------------------------------------------ loop
    def relevant_event(self, is_delete: bool, key: str, value: str) -> bool:
        """Which DCS changes wake the loop at once: not our own writes, not members' routine updates."""
        if key.startswith("members/"):
            # a member that was not there before (a new or rejoining node): the leader makes its slot at once
            known = {m.name for m in self.cluster.members} if self.cluster is not None else set()
            return not is_delete and key[len("members/"):] not in known
        if key in ("status", "history"):
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
            self.wake.wait(timeout)
            self.wake.clear()
        self.shutdown()

    def run_once(self) -> Decision:
        self._run_tasks()
        self._run_scheduled_restart()
        obs = self.observe()
        self._apply_dynamic_config()
        decision = decide(obs)
        if decision.reason != self._last_reason:
            log.info("%s", decision.reason)
            self._last_reason = decision.reason
        self.executor.run(decision)
        self._publish()
        # after a change (start, promote, follow, step down ...) look again soon, so that state shows up quickly
        routine = {Kind.NOOP, Kind.RENEW_LOCK, Kind.UPDATE_STATUS, Kind.CREATE_SLOTS}
        settling = bool(obs.pg.running and obs.pg.in_recovery and self.upstream and not obs.pg.streaming)
        self.quick_recheck = settling or any(k not in routine for k in decision.kinds)
        return decision

    def _run_scheduled_restart(self) -> None:
        """A restart scheduled over REST (`POST /restart {"schedule": ...}`) runs here once it is due."""
        sched = self.scheduled_restart
        if not sched:
            return
        from datetime import datetime

        try:
            due = datetime.fromisoformat(str(sched["schedule"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            self.scheduled_restart = None
            return
        if time.time() < due:
            return
        self.scheduled_restart = None
        s = self._pg_state
        role = sched.get("role")
        if role and role != self._role_name() and not (role == "primary" and self._role_name() == "master"):
            log.info("scheduled restart skipped: role is %s, not %s", self._role_name(), role)
            return
        if sched.get("restart_pending") and not (s is not None and s.pending_restart):
            log.info("scheduled restart skipped: no restart pending")
            return
        want = sched.get("postgres_version")
        if want and s is not None and s.server_version and not _version_below(s.server_version, str(want)):
            log.info("scheduled restart skipped: PostgreSQL is not older than %s", want)
            return
        log.info("running the scheduled restart")
        self.busy = "restart"
        try:
            self.executor.run_task("restart", {"timeout": sched.get("timeout")})
        except CtlError as exc:
            log.error("scheduled restart failed: %s", exc)
        finally:
            self.busy = None

    def observe(self) -> Observation:
        now = self.clock()
        try:
            cluster = self.dcs.get_cluster()
        except CtlError as exc:
            if self.cluster is not None:
                log.warning("DCS unreachable: %s", exc)
            cluster = None
        self.cluster = cluster
        if cluster is not None:
            self._check_dynamic_config(cluster)
            settings = st.ha_settings(self.config, self.good_config)
            timing = (settings.ttl, settings.loop_wait, settings.retry_timeout, settings.maximum_lag_on_failover)
            if timing != (self.settings.ttl, self.settings.loop_wait, self.settings.retry_timeout,
                          self.settings.maximum_lag_on_failover):
                log.info("now in effect: ttl %s, loop_wait %s, retry_timeout %s, maximum_lag_on_failover %s",
                         *timing)
            self.settings = settings
        state = self.pg.probe()
        self._pg_state = state
        if state.running and state.streaming:
            self._last_streaming = now
        pgv = self._pg_view(state, now)
        peers = {}
        if cluster is not None and cluster.initialize and pgv.running:
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
            last_lock_renewal=self.last_lock_renewal,
            peers=peers,
            wall_time=time.time(),
        )

    def _apply_dynamic_config(self) -> None:
        """A changed `config` key reaches PostgreSQL: rewrite the config files and reload.

        Reloadable parameters and pg_hba take effect at once; postmaster-context ones show as pending restart
        (PostgreSQL's own pg_settings.pending_restart, published in the member key with old -> new values).
        """
        cluster, state = self.cluster, self._pg_state
        good = self.good_config
        if cluster is None or good is None or state is None or not state.running:
            return
        revision = good.mod_revision
        if revision == self._applied_config_revision:
            return
        params = st.pg_parameters(self.config, good)
        hba = st.pg_hba(self.config, good)
        if self._applied_config_revision is None:  # first look after start: files were written at start
            self._applied_config_revision, self._applied_params, self._applied_hba = revision, params, hba
            return
        self._applied_config_revision = revision
        if params == self._applied_params and hba == self._applied_hba:
            return
        changed = sorted(k for k in set(params) | set(self._applied_params or {})
                         if params.get(k) != (self._applied_params or {}).get(k))
        try:
            standby = bool(state.in_recovery)
            self.executor.write_config(standby=standby, target=self.upstream if standby else None)
            self.pg.reload()
            what = ", ".join(changed) if changed else "pg_hba"
            log.info("dynamic config changed (%s): configuration files rewritten, PostgreSQL reloaded", what)
            self._applied_params, self._applied_hba = params, hba
        except CtlError as exc:
            log.error("cannot apply the new dynamic config: %s", exc)

    def _check_dynamic_config(self, cluster: Cluster) -> None:
        """Adopt a new `config` key only when it is valid; a bad one is logged once and the last good one stays.

        The same validation as `PATCH /config` and `edit-config` (ctl.dynconfig), so a value written by another
        tool (Patroni's edit-config validates nothing) cannot make the agent misbehave or log on every loop.
        """
        cfg = cluster.config
        if cfg is None or cfg.mod_revision == self._checked_config_revision:
            return
        self._checked_config_revision = cfg.mod_revision
        found = validate_dynamic_config(cfg.data) if cfg.data else []
        # Keys the agent does not use are harmless (Patroni ignores them too, and other tools may add some);
        # bad values of the keys it does use, and unknown PostgreSQL parameters, are not.
        unused = [p for p in found if p.startswith("unknown key ")]
        problems = [p for p in found if p not in unused]
        if unused:
            log.warning("dynamic config (revision %s): ignoring %s", cfg.mod_revision, "; ".join(unused))
        if problems:
            log.error("ignoring invalid dynamic config (revision %s), keeping the last good one: %s",
                      cfg.mod_revision, "; ".join(problems))
            return
        self.good_config = cfg

    def _pg_view(self, state: Any, now: float) -> PgView:
        empty = self.pg.data_dir_empty()
        sysid = state.system_identifier if state.running else None
        was_primary = False
        if not empty and not state.running:
            control = self._controldata()
            sysid = control.get("Database system identifier") or sysid
            was_primary = control.get("Database cluster state", "") in ("in production", "shut down")
        grace = max(2 * self.settings.loop_wait, 5)
        stalled = (bool(state.running and state.in_recovery and not state.streaming and self.upstream)
                   and now - max(self._last_streaming or 0.0, self.follow_since) > grace)
        return PgView(
            running=state.running,
            in_recovery=state.in_recovery,
            timeline=state.timeline,
            wal_lsn=state.wal_lsn,
            streaming=state.streaming,
            stream_stalled=stalled,
            upstream=self.upstream if state.running else None,
            data_dir_empty=empty,
            system_identifier=sysid,
            was_primary=was_primary,
            start_failed=self.start_failed,
            replication=_replicas(state),
            sync_names=getattr(state, "sync_names", None) if state.running else None,
            sync_names_managed=self.sync_names is not None,
            sync_ready_lsn=self.sync_ready_lsn,
        )

    def _controldata(self) -> dict[str, str]:
        try:
            return self.pg.controldata()
        except CtlError:
            return {}

    # ------------------------------------------------------------------------------------------------ publish
    def _member_data(self) -> dict[str, Any]:
        s = self._pg_state
        data: dict[str, Any] = {
            "conn_url": self.conn_url,
            "api_url": self.api_url,
            "state": self._state_name(),
            "role": self._role_name(),
            "version": __version__,
        }
        if s is not None and s.running:
            if s.wal_lsn is not None:
                data["xlog_location"] = s.wal_lsn
            if s.in_recovery:
                if s.replayed_lsn is not None:
                    data["replay_lsn"] = s.replayed_lsn
                if s.received_lsn is not None:
                    data["receive_lsn"] = s.received_lsn
                data["replication_state"] = "streaming" if s.streaming else "in archive recovery"
            if s.timeline is not None:
                data["timeline"] = s.timeline
            if s.pending_restart:
                data["pending_restart"] = True
                data["pending_restart_reason"] = dict(s.pending_restart)
        if self.config.tags:
            data["tags"] = dict(self.config.tags)
        if self.scheduled_restart:
            data["scheduled_restart"] = dict(self.scheduled_restart)
        if self.cluster is not None and self.cluster.is_paused:
            data["pause"] = True
        return data

    def _state_name(self) -> str:
        if self.executor.activity:
            return self.executor.activity
        s = self._pg_state
        if s is None or not s.running:
            return "start failed" if self.start_failed else "stopped"
        return "running"

    def _role_name(self) -> str:
        s = self._pg_state
        if s is None or not s.running or s.in_recovery is None:
            return "uninitialized" if self.pg.data_dir_empty() else "replica"
        return "replica" if s.in_recovery else "primary"

    def _publish(self) -> None:
        """Keep our lease alive and our member key current; refresh the cached status for the REST API."""
        if self.cluster is not None:
            try:
                lease = self.dcs.ensure_lease(self.settings.ttl)
                if lease == self._lease_id:
                    if not self.dcs.refresh_lease():
                        lease = self.dcs.ensure_lease(self.settings.ttl)
                if lease != self._lease_id:
                    self._lease_id = lease
                    self._last_member = None
                data = self._member_data()
                if data != self._last_member and self.dcs.touch_member(self.name, data):
                    self._last_member = data
            except CtlError as exc:
                log.warning("cannot update member key: %s", exc)
        self._status = self._node_status()

    def _node_status(self) -> NodeStatus:
        s = self._pg_state
        cluster = self.cluster
        running = bool(s is not None and s.running)
        return replace(
            self._status,
            state=self._state_name(),
            role=self._role_name(),
            is_leader=bool(cluster and cluster.leader and cluster.leader.name == self.name),
            server_version=getattr(s, "server_version", None),
            postmaster_start_time=getattr(s, "postmaster_start_time", None),
            xlog_location=s.wal_lsn if running and not s.in_recovery else None,
            received_location=s.received_lsn if running and s.in_recovery else None,
            replayed_location=s.replayed_lsn if running and s.in_recovery else None,
            replayed_timestamp=getattr(s, "replayed_timestamp", None) if running else None,
            wal_replay_paused=bool(getattr(s, "wal_replay_paused", False)),
            timeline=s.timeline if running else None,
            replication_state=("streaming" if s.streaming else "in archive recovery")
            if running and s.in_recovery else None,
            replication=tuple(getattr(s, "replication", ()) or ()) if running else (),
            sync_standby=bool(cluster and cluster.synchronous_mode == "on" and self.name in cluster.sync_standbys),
            quorum_standby=bool(cluster and cluster.synchronous_mode == "quorum"
                                and self.name in cluster.sync_standbys),
            pause=bool(cluster and cluster.is_paused),
            cluster_unlocked=bool(cluster is not None and cluster.leader is None),
            dcs_last_seen=int(time.time()) if cluster is not None else self._status.dcs_last_seen,
            tags=dict(self.config.tags),
            system_identifier=(cluster.initialize if cluster and cluster.initialize else None)
            or getattr(s, "system_identifier", None),
            pending_restart=bool(getattr(s, "pending_restart", None)),
            pending_restart_reason=dict(getattr(s, "pending_restart", None) or {}),
            scheduled_restart=dict(self.scheduled_restart) if self.scheduled_restart else None,
            last_loop_time=time.time(),
            ttl=self.settings.ttl,
            maximum_lag_on_failover=self.settings.maximum_lag_on_failover,
            cluster_optime=cluster.optime if cluster else None,
        )

    # ------------------------------------------------------------------------------------------------ stop
    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def shutdown(self) -> None:
        """Graceful stop: a leader checkpoints and shuts PostgreSQL down, then releases the lock at once."""
        leader = self.executor.holds_lock_now()
        s = self._pg_state
        primary = bool(s is not None and s.running and s.in_recovery is False)
        if self.on_before_release is not None:
            self.on_before_release()
        try:
            if primary:
                log.info("shutting down: stopping primary PostgreSQL (checkpoint first)")
                self.pg.stop(mode="fast", checkpoint=True)
            else:
                log.info("shutting down: stopping PostgreSQL")
                self.pg.stop(mode="fast")
        except CtlError as exc:
            log.error("stopping PostgreSQL failed: %s", exc)
        if leader:
            try:
                if self.dcs.release_leader(self.name):
                    log.info("released leader lock")
            except CtlError as exc:
                log.warning("cannot release leader lock: %s", exc)
        try:
            self.executor.activity = None
            self._pg_state = self.pg.probe()
            data = self._member_data()
            data["state"] = "stopped"
            self.dcs.touch_member(self.name, data)
        except CtlError:
            pass

    on_before_release: Any = None  # set by the runner: stops the REST API so peers see us as gone



def _replicas(state: Any) -> tuple[Replica, ...]:
    """pg_stat_replication rows of a running primary, as the HA brain sees them."""
    if not (state.running and state.in_recovery is False):
        return ()
    return tuple(Replica(name=str(r.get("application_name") or ""), state=str(r.get("state") or ""),
                         sync_state=str(r.get("sync_state") or "async"), lsn=r.get("flush_lsn"))
                 for r in state.replication or ())


def _version_below(server_version: int, wanted: str) -> bool:
    """server_version_num (150018) < a dotted version ("15.19")."""
    parts = [int(p) for p in wanted.split(".") if p.isdigit()]
    if not parts:
        return False
    major = parts[0]
    minor = parts[1] if len(parts) > 1 else 0
    want = major * 10000 + minor if major >= 10 else major * 10000 + minor * 100 + (parts[2] if len(parts) > 2 else 0)
    return server_version < want
