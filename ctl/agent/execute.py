"""Carry out a Decision: each action kind is one method; the first failing action ends the list.

Quick actions (DCS writes, promote, demote, follow) run on the HA loop. The first long one (clone, rewind,
reinitialize, start, bootstrap) and the actions after it go to the task runner as one task, and the loop goes
on: the next iterations renew the lock and the member key while the task runs (ctl/agent/taskrunner.py).
The executor sees the agent only through NodeState and the objects it is given; it never imports the loop.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from ctl.agent import audit, dcsfail
from ctl.agent import settings as st
from ctl.agent import standby as sb
from ctl.agent.callbacks import role_of
from ctl.agent.history import write_history
from ctl.agent.node import NodeState, write_config
from ctl.agent.pgtasks import PgTasks
from ctl.agent.sync import SyncKeeper
from ctl.agent.taskrunner import Job, TaskResult, TaskRunner
from ctl.config import Config
from ctl.dcs import codec, keys
from ctl.errors import CtlError, DcsUnavailable
from ctl.ha.actions import Action, Decision, Kind
from ctl.ha.standby import REMOTE
from ctl.pg.conf import slot_name

log = logging.getLogger("hactl.agent")

# The long actions: (task name for "<name> already in progress", member state while it runs)
LONG: Mapping[Kind, tuple[str, str]] = {
    Kind.CLONE: ("bootstrap from {target}", "creating replica"),
    Kind.REWIND: ("running pg_rewind from {target}", "rewinding"),
    Kind.REINITIALIZE: ("reinitialize", "creating replica"),
    Kind.START_PRIMARY: ("starting primary", "starting"),
    Kind.START_REPLICA: ("starting as a replica", "starting"),
    Kind.DEMOTE_CLUSTER: ("demoting to a standby cluster", "stopping"),
}


class Executor:
    def __init__(self, config: Config, node: NodeState, dcs: Any, pg: Any, clock: Callable[[], float],
                 runner: TaskRunner) -> None:
        self.config = config
        self.node = node
        self.dcs = dcs
        self.pg = pg
        self.clock = clock
        self.runner = runner
        self.tasks = PgTasks(config, node, dcs, pg, clock)
        self.sync = SyncKeeper(config, node, dcs, pg)
        self._slots: frozenset[str] | None = None
        self._seen: dict[str, float] = {}  # member -> when the leader last saw its key (member_slots_ttl)
        self._adopted_retained = False
        self._last_status: tuple[int | None, tuple[str, ...]] | None = None

    # ------------------------------------------------------------------------------------------------ run
    def run(self, decision: Decision) -> bool:
        self.reason = decision.reason  # for the audit trail
        actions = decision.actions
        for i, action in enumerate(actions):
            if action.kind in LONG:
                return self._start_task(actions[i:])
            handler: Callable[[Action], bool] = getattr(self, "_" + action.kind.value)
            try:
                ok = handler(action)
            except CtlError as exc:
                log.error("%s failed: %s", action, exc)
                ok = False
            if not ok or dcsfail.failed(self.dcs):  # etcd gone: the loop's DCS-error path takes over at once
                return False
        return True

    def _start_task(self, actions: Sequence[Action]) -> bool:
        first = actions[0]
        name, state = LONG[first.kind]
        name = name.format(target=first.target)

        def work(job: Job) -> TaskResult:
            for action in actions:
                if not self._run_in_task(job, action):
                    return TaskResult(False, f"{action} failed")
            return TaskResult(True, f"{name} done")

        job, refused = self.runner.try_start(name, state, work)
        if job is None:
            log.info("not starting %s: %s", name, refused)
            return False
        return True

    def _run_in_task(self, job: Job, action: Action) -> bool:
        t, target = self.tasks, action.target or ""
        if action.kind == Kind.CLONE:
            return t.clone(job, target)
        if action.kind == Kind.START_REPLICA:
            return t.start_replica(job, action.target)
        if action.kind == Kind.START_PRIMARY:
            return t.start_primary(job, timeout=self.node.settings.primary_start_timeout or 60)
        if action.kind == Kind.REWIND:
            return t.rewind(job, target)
        if action.kind == Kind.REINITIALIZE:
            return t.reinitialize(job, target)
        if action.kind == Kind.DEMOTE_CLUSTER:
            return sb.demote_cluster(t, job)
        return getattr(self, "_" + action.kind.value)(action)

    # ------------------------------------------------------------------------------------------------ requests
    def request(self, kind: str, params: Mapping[str, Any]) -> tuple[Job | None, TaskResult | None]:
        """A REST request as a task: (job, None) when started, or (None, why not)."""
        node = self.node
        if kind == "restart":
            if not self.pg.is_running():
                return None, TaskResult(False, "postgres is not running")
            timeout = float(params.get("timeout") or 60)
            job, refused = self.runner.try_start("restart", "restarting", lambda j: _ok(
                self.tasks.restart(j, timeout), "restarted successfully", "restart failed"))
            return job, (TaskResult(False, refused) if refused else None)
        if kind == "reinitialize":
            c = node.cluster
            if c is None or c.leader is None:
                return None, TaskResult(False, "Cluster has no leader, can not reinitialize")
            if c.leader.name == node.name:
                return None, TaskResult(False, "I am the leader, can not reinitialize")
            source = c.leader.name
            log.info("reinitializing on request: re-cloning from %s", source)
            job, refused = self.runner.try_start("reinitialize", "creating replica", lambda j: _ok(
                self.tasks.reinitialize(j, source), "reinitialize done", f"reinitialize from {source} failed"))
            return job, (TaskResult(False, refused) if refused else None)
        return None, TaskResult(False, f"unknown task {kind}")

    def reload(self) -> TaskResult:
        node = self.node
        if self.pg.data_dir_empty():
            return TaskResult(False, "no data directory")
        standby = bool(node.pg_state is not None and node.pg_state.in_recovery)
        write_config(self.config, node, self.pg, standby=standby, target=node.upstream if standby else None)
        if self.pg.is_running():
            self.pg.reload()
            node.hooks.reloaded(role_of(node))
        log.info("reloaded configuration on request")
        return TaskResult(True, "reload scheduled" if node.cluster is not None else "reloaded")

    # ------------------------------------------------------------------------------------------------ actions
    def _noop(self, action: Action) -> bool:
        return True

    def _write_sync(self, action: Action) -> bool:
        return self.sync.write_sync(action.target or "")

    def _delete_sync(self, action: Action) -> bool:
        return self.sync.delete_sync()

    def _set_sync_names(self, action: Action) -> bool:
        return self.sync.set_names(action.target)

    def _initialize(self, action: Action) -> bool:
        if not self.dcs.initialize(""):
            log.info("another member won the bootstrap race")
            return False
        log.info("won the bootstrap race: initializing a new cluster")
        job, refused = self.runner.try_start("bootstrap", "initializing new cluster", lambda j: _ok(
            self.tasks.bootstrap(j), "bootstrapped", "bootstrap failed"))
        if job is None:
            log.error("cannot bootstrap: %s", refused)
            self.dcs.delete(keys.INITIALIZE)
            return False
        return True

    def _acquire_lock(self, action: Action) -> bool:
        node = self.node
        before = self.clock()
        self.dcs.ensure_lease(node.settings.ttl)
        self._keepalive()  # the lease may date from the last iteration: its expiry must count from `before`
        if self.dcs.acquire_leader(node.name):
            node.last_lock_renewal = before
            log.info("acquired leader lock")
            return True
        log.info("could not acquire leader lock: another member holds it")
        return False

    def _renew_lock(self, action: Action) -> bool:
        node = self.node
        before = self.clock()
        self._keepalive()
        if self.dcs.renew_leader(node.name):
            node.last_lock_renewal = before
            return True
        node.last_lock_renewal = None
        log.warning("lost leader lock")
        return False

    def _keepalive(self) -> None:
        """Refresh our lease, so that the lock renewed next expires ttl after the caller's `before` at the
        earliest; a lease etcd no longer knows is replaced.

        Raises:
            DcsUnavailable: etcd did not answer (the lock is then not renewed: its expiry stays where it was).
        """
        if self.dcs.refresh_lease():
            return
        if dcsfail.failed(self.dcs):
            raise DcsUnavailable("etcd is unreachable (lease keepalive)")
        self.dcs.ensure_lease(self.node.settings.ttl)

    def _release_lock(self, action: Action) -> bool:
        self.node.last_lock_renewal = None
        return self.dcs.release_leader(self.node.name)

    def _hand_over(self, action: Action) -> bool:
        """Release the lock so that a replica takes over; decide() keeps this node down meanwhile."""
        self.node.handed_over_at = self.clock()
        return self._release_lock(action)

    def _promote(self, action: Action) -> bool:
        node = self.node
        log.info("promoting PostgreSQL")
        old = self.pg.probe()
        self.pg.promote()
        node.hooks.promoted()
        node.upstream = None
        self._slots = None
        self._adopted_retained = False
        new = self.pg.probe()
        log.info("promoted: now primary on timeline %s", new.timeline)
        audit.record(self.dcs, node.name, "promote", getattr(self, "reason", ""), timeline=new.timeline)
        write_history(self.dcs, self.pg.data_dir, node.name, old.timeline, new.timeline)
        return True

    def _step_down(self, action: Action) -> bool:
        """Switchover: a clean, checkpointed shutdown (the replicas receive all WAL), then release the lock."""
        node = self.node
        log.info("switchover to %s: stopping PostgreSQL cleanly, then releasing the leader lock", action.target)
        node.last_switchover_result = None
        self.pg.stop(mode="fast", checkpoint=True)
        node.hooks.stopped("demoted")
        node.upstream = None
        node.last_lock_renewal = None
        if self.dcs.release_leader(node.name):
            log.info("released leader lock for %s", action.target)
        return True

    def _clear_failover(self, action: Action) -> bool:
        c = self.node.cluster
        if c is None or c.failover is None or c.failover.is_empty:
            return True
        if action.refusal:
            self.node.last_switchover_result = action.refusal
            log.warning("failover key cleared: %s", action.refusal)
        self.dcs.put(keys.FAILOVER, "{}", mod_revision=c.failover.mod_revision)
        return True

    def _demote(self, action: Action) -> bool:
        """Stop PostgreSQL at once; a running task (a restart, a start) is cancelled first."""
        node = self.node
        log.warning("demoting: stopping PostgreSQL immediately")
        audit.record(self.dcs, node.name, "demote", getattr(self, "reason", ""))
        node.last_lock_renewal = None
        if self.runner.busy:
            self.runner.cancel()
        self.pg.stop(mode="immediate")
        node.hooks.stopped("demoted")
        node.upstream = None
        return True

    def _follow(self, action: Action) -> bool:
        node = self.node
        write_config(self.config, node, self.pg, standby=True, target=action.target)
        self.pg.reload()
        node.hooks.reloaded("standby_leader" if action.target == REMOTE else "replica")
        node.upstream = action.target
        node.follow_since = self.clock()
        log.info("following %s", action.target)
        return True

    # ------------------------------------------------------------------------------------------------ slots
    def retained_members(self) -> list[str]:
        """Members whose slot the leader keeps: every member it sees, and those gone for < member_slots_ttl
        (Patroni 4's `retain_slots`), so a former leader that comes back finds its slot."""
        node = self.node
        c = node.cluster
        now = self.clock()
        if c is None:
            return sorted(self._seen)
        ttl = node.settings.member_slots_ttl
        if not self._adopted_retained and c.status is not None and ttl > 0:  # a new leader keeps the old list
            for name in c.status.retain_slots:
                self._seen.setdefault(name, now)
            self._adopted_retained = True
        for m in c.members:
            self._seen[m.name] = now
        self._seen = {n: t for n, t in self._seen.items() if n != node.name and now - t <= ttl}
        return sorted(self._seen)

    def _create_slots(self, action: Action) -> bool:
        node = self.node
        if node.cluster is None or not st.use_slots(self.config, node.good_config):
            return True
        wanted = frozenset(slot_name(n) for n in self.retained_members())
        if wanted != self._slots:
            self.pg.ensure_slots(sorted(wanted))
            for gone in sorted((self._slots or frozenset()) - wanted):
                self.pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                "WHERE slot_name = %s AND slot_type = 'physical' AND NOT active", (gone,))
                log.info("dropped the slot of %s (gone for more than member_slots_ttl)", gone)
            self._slots = wanted
        return True

    def _update_status(self, action: Action) -> bool:
        node = self.node
        state = node.pg_state
        optime = state.wal_lsn if state is not None else None
        retain = tuple(sorted(set(self.retained_members()) | {node.name}))
        if (optime, retain) == self._last_status:
            return True
        self.dcs.put(keys.STATUS, codec.encode_status(optime, None, retain))
        self._last_status = (optime, retain)
        return True


def _ok(done: bool, yes: str, no: str) -> TaskResult:
    return TaskResult(bool(done), yes if done else no)
