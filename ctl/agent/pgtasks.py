"""The long actions, run by the task runner's worker and never on the HA loop: bootstrap, clone (base backup),
rewind, reinitialize, start, restart. Each takes the running Job (to publish progress and to notice a cancel)
and returns True on success; a CtlError ends the task as a failure.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any, Callable

from ctl.agent import audit
from ctl.agent import settings as st
from ctl.agent import standby as sb
from ctl.agent.node import NodeState, conninfo, write_config
from ctl.agent.taskrunner import Job
from ctl.config import Config
from ctl.dcs import codec, keys
from ctl.errors import ConfigError, CtlError
from ctl.ha.standby import REMOTE
from ctl.pg.process import cancellable

log = logging.getLogger("hactl.agent")

# pg_basebackup --progress: "  123456/987654 kB (12%), 0/1 tablespace ..."
_PROGRESS = re.compile(r"(\d+)/(\d+) kB")


class PgTasks:
    handoff: Any = None  # ctl.agent.handoff.Handoff, set by the agent: a synchronous standby's hand-off

    def __init__(self, config: Config, node: NodeState, dcs: Any, pg: Any, clock: Callable[[], float]) -> None:
        self.config = config
        self.node = node
        self.dcs = dcs
        self.pg = pg
        self.clock = clock

    # ------------------------------------------------------------------------------------------------ start
    def start(self, job: Job, *, standby: bool, target: str | None, timeout: float | None = None,
              restarting: bool = False) -> bool:
        """Write the configuration and start PostgreSQL; a failed start is remembered for decide().

        A standby is started without waiting for it to reach a consistent state: that may take long (or need a
        slot the leader has not made yet), and the loop watches it from here.
        """
        node = self.node
        write_config(self.config, node, self.pg, standby=standby, target=target)
        job.state = "starting"
        job.check()
        try:
            self.pg.start(timeout=timeout or 60, wait_ready=not standby, cancelled=job.cancelled.is_set)
        except CtlError:
            node.start_failed = True
            if not standby and self.pg.is_running():  # a primary that did not come up in time: no half-primary
                log.error("stopping PostgreSQL: it did not start as primary within %ss", timeout or 60)
                self.pg.stop(mode="immediate")
            raise
        node.start_failed = False
        node.handed_over_at = None
        node.upstream = target
        node.follow_since = self.clock()
        role = "standby_leader" if target == REMOTE else ("replica" if standby else "primary")
        if restarting:
            node.hooks.restarted(role)
        else:
            node.hooks.started(role)
        return True

    def start_replica(self, job: Job, target: str | None) -> bool:
        self.start(job, standby=True, target=target)
        log.info("started as a replica%s", f" of {target}" if target else " (no upstream yet)")
        return True

    def start_primary(self, job: Job, timeout: float | None = None) -> bool:
        self.start(job, standby=False, target=None, timeout=timeout)
        log.info("started PostgreSQL as primary")
        return True

    def restart(self, job: Job, timeout: float) -> bool:
        if not self.pg.is_running():
            raise CtlError("postgres is not running")
        standby = bool(self.node.pg_state is not None and self.node.pg_state.in_recovery)
        known = self.node.cluster  # read before our `restarting` member key could make the leader drop us

        def stop_and_start() -> None:
            self.pg.stop(mode="fast", timeout=timeout)
            job.check()
            self.start(job, standby=standby, target=self.node.upstream if standby else None, timeout=timeout,
                       restarting=True)

        if self.handoff is not None:  # a synchronous standby first hands its role over (ctl/agent/handoff.py)
            self.handoff.around(stop_and_start, what="restart", settings=self.node.settings,
                                configured=self.config.tags, is_leader=self.node.holds_lock_now() or not standby,
                                known=known, cancelled=job.cancelled.is_set)
        else:
            stop_and_start()
        log.info("restarted PostgreSQL on request")
        return True

    # ------------------------------------------------------------------------------------------------ bootstrap
    def bootstrap(self, job: Job) -> bool:
        """initdb, start, create users, take the leader lock, then publish the system identifier and config."""
        node, pg, cfg = self.node, self.pg, self.config
        try:
            remote = sb.bootstrap_from_remote(self, job)  # a new standby cluster clones the remote, no initdb
            if pg.data_dir_empty():
                pg.initdb(list(cfg.bootstrap.get("initdb") or []))
            job.check()
            write_config(cfg, node, pg, standby=remote, target=REMOTE if remote else None)
            pg.start()
            node.upstream = REMOTE if remote else None
            if not remote:
                pg.create_users(cfg.postgresql.superuser, cfg.postgresql.replication, cfg.postgresql.rewind)
                self._bootstrap_users()
            sysid = pg.system_identifier() or ""
            self.dcs.ensure_lease(node.settings.ttl)
            if not self.dcs.acquire_leader(node.name):
                raise CtlError("could not take the leader lock after bootstrap")
            node.last_lock_renewal = self.clock()
            self.dcs.put(keys.INITIALIZE, sysid)
            self.dcs.put(keys.CONFIG, codec.dumps(st.bootstrap_dcs(cfg)), create=True)
            log.info("bootstrapped cluster %s (system identifier %s); acquired leader lock", cfg.scope, sysid)
            node.hooks.started("standby_leader" if remote else "primary")
            return True
        except CtlError:
            try:
                self.dcs.delete(keys.INITIALIZE)
            except CtlError:
                pass
            raise

    def _bootstrap_users(self) -> None:
        """`bootstrap.users: {name: {password, options: [createdb, ...]}}`: extra roles made once, at bootstrap.

        Raises:
            ConfigError: an option that is not a role attribute (never passed through to SQL).
        """
        from psycopg import sql

        users = self.config.bootstrap.get("users")
        if not isinstance(users, dict):
            return
        for name, spec in users.items():
            spec = spec if isinstance(spec, dict) else {}
            options = [str(o).strip().lower() for o in spec.get("options") or []]
            bad = [o for o in options if o not in st.ROLE_OPTIONS]
            if bad:
                raise ConfigError(f"bootstrap.users.{name}: unknown role option(s) {', '.join(bad)}")
            stmt = sql.SQL("CREATE ROLE {} WITH LOGIN").format(sql.Identifier(str(name)))
            if spec.get("password") is not None:
                stmt = stmt + sql.SQL(" PASSWORD {}").format(sql.Literal(str(spec["password"])))
            if options:
                stmt = stmt + sql.SQL(" " + " ".join(o.upper() for o in options))
            self.pg.execute(stmt)
            log.info("created bootstrap user %s", name)

    # ------------------------------------------------------------------------------------------------ copies
    def clone(self, job: Job, target: str) -> bool:
        source = conninfo(self.config, self.node, target, replication=True)
        if source is None:
            return False
        log.info("creating replica: pg_basebackup from %s", target)
        job.state = "creating replica"

        def progress(line: str) -> None:
            m = _PROGRESS.search(line)
            if m:
                job.progress = {"done_bytes": int(m.group(1)) * 1024, "total_bytes": int(m.group(2)) * 1024}

        try:
            job.check()
            with cancellable(job.cancelled.is_set):  # a cancel just before pg_basebackup starts kills it too
                self.pg.basebackup(source, options=st.basebackup_options(self.config), on_output=progress)
        except CtlError:
            self.pg.remove_data_dir()
            raise
        finally:
            job.progress = None
        job.check()
        return True

    def source_reachable(self, target: str) -> bool:
        """Destructive steps (rewind, re-clone) need a live source: never wipe data for a dead leader."""
        c = self.node.cluster
        m = c.member(target) if c is not None and target else None
        m = sb.remote_member(self.config, self.node) if target == REMOTE else m
        if m is None or not m.host:
            return False
        try:
            socket.create_connection((m.host, m.port), timeout=2).close()
            return True
        except OSError as exc:
            log.warning("not touching the data directory: %s at %s:%s is not reachable (%s)", target, m.host,
                        m.port, exc.strerror or exc)
            return False

    def rewind(self, job: Job, target: str) -> bool:
        source = conninfo(self.config, self.node, target, replication=False)
        if source is None or not self.source_reachable(target):
            return False
        if self.pg.is_running():
            self.pg.stop(mode="fast")
        job.state = "rewinding"
        log.info("running pg_rewind from %s", target)
        audit.record(self.dcs, self.node.name, "rewind", f"pg_rewind from {target}", source=target)
        with cancellable(job.cancelled.is_set):
            rewound = self.pg.rewind(source)
        if not rewound:
            job.check()
            if not self.source_reachable(target):
                return False
            if target == REMOTE:  # the remote may itself be a standby (chained standby clusters): keep the data
                log.error("pg_rewind from the standby_cluster remote failed: not re-cloning automatically")
                return False
            log.warning("pg_rewind from %s failed: re-cloning", target)
            return self.reinitialize(job, target)
        job.check()
        return self.start_replica(job, target)

    def reinitialize(self, job: Job, target: str) -> bool:
        if not self.source_reachable(target):
            return False
        job.state = "creating replica"
        if self.pg.is_running():
            self.pg.stop(mode="immediate")
        audit.record(self.dcs, self.node.name, "re-clone", f"re-cloning from {target}", source=target)
        self.pg.remove_data_dir()
        return self.clone(job, target) and self.start_replica(job, target)
