"""Carry out a Decision: each action kind is one method; the first failing action ends the list."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ctl.agent import settings as st
from ctl.agent.sync import SyncKeeper
from ctl.agent.tasks import TaskResult
from ctl.dcs import codec, keys
from ctl.errors import ConfigError, CtlError
from ctl.ha.actions import Action, Decision, Kind
from ctl.model import HistoryEntry, Member, lsn_from_str
from ctl.pg.conf import slot_name

if TYPE_CHECKING:
    from ctl.agent.loop import Agent

log = logging.getLogger("hactl.agent")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Executor:
    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.activity: str | None = None  # member state while a long action runs ("creating replica", ...)
        self._slots: frozenset[str] | None = None
        self._last_status: tuple[int | None, tuple[str, ...]] | None = None
        self._reason = ""
        self.sync = SyncKeeper(self)

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def cfg(self):
        return self.agent.config

    def holds_lock_now(self) -> bool:
        c = self.agent.cluster
        return bool(c and c.leader and c.leader.name == self.agent.name) or self.agent.last_lock_renewal is not None

    def _member(self, name: str | None) -> Member | None:
        c = self.agent.cluster
        return c.member(name) if c and name else None

    def conninfo(self, target: str, *, replication: bool) -> str | None:
        m = self._member(target)
        if m is None or not m.host:
            return None
        user = self.cfg.postgresql.replication if replication else (
            self.cfg.postgresql.rewind or self.cfg.postgresql.superuser)
        parts = [f"host={m.host}", f"port={m.port}", f"user={_quote(user.username)}"]
        if user.password:
            parts.append(f"password={_quote(user.password)}")
        if replication:
            parts.append(f"application_name={_quote(self.agent.name)}")
        else:
            parts.append("dbname=postgres")
        parts.append("connect_timeout=5")
        return " ".join(parts)

    def write_config(self, *, standby: bool, target: str | None) -> bool:
        dynamic = self.agent.good_config
        primary_conninfo = self.conninfo(target, replication=True) if (standby and target) else None
        leader = self.agent.cluster.leader.name if (self.agent.cluster and self.agent.cluster.leader) else None
        # only the leader keeps slots (for every member); a cascading replica streams without one
        slot = (slot_name(self.agent.name)
                if (primary_conninfo and target == leader and st.use_slots(self.cfg, dynamic)) else None)
        params = st.pg_parameters(self.cfg, dynamic)
        if self.agent.sync_names is not None:  # synchronous mode: the leader's choice, not the configured value
            params["synchronous_standby_names"] = self.agent.sync_names
        return self.agent.pg.write_config(
            params,
            st.pg_hba(self.cfg, dynamic),
            standby=standby,
            primary_conninfo=primary_conninfo,
            primary_slot_name=slot,
        )

    # ------------------------------------------------------------------------------------------------ run
    def run(self, decision: Decision) -> bool:
        self._reason = decision.reason
        for action in decision.actions:
            handler: Callable[[Action], bool] = getattr(self, "_" + action.kind.value)
            try:
                ok = handler(action)
            except CtlError as exc:
                log.error("%s failed: %s", action, exc)
                ok = False
            finally:
                self.activity = None
            if not ok:
                return False
        return True

    # ------------------------------------------------------------------------------------------------ tasks
    def run_task(self, kind: str, params: Mapping[str, Any]) -> TaskResult:
        """A REST request, run in the loop thread between two HA iterations."""
        a = self.agent
        if kind == "restart":
            if not a.pg.is_running():
                return TaskResult(False, "postgres is not running")
            self.activity = "restarting"
            a._publish()
            timeout = float(params.get("timeout") or 60)
            a.pg.restart(timeout=timeout)
            log.info("restarted PostgreSQL on request")
            return TaskResult(True, "restarted successfully")
        if kind == "reload":
            if a.pg.data_dir_empty():
                return TaskResult(False, "no data directory")
            c = a.cluster
            standby = bool(a._pg_state is not None and a._pg_state.in_recovery)
            self.write_config(standby=standby, target=a.upstream if standby else None)
            if a.pg.is_running():
                a.pg.reload()
            log.info("reloaded configuration on request")
            return TaskResult(True, "reload scheduled" if c is not None else "reloaded")
        if kind == "reinitialize":
            c = a.cluster
            if c is None or c.leader is None:
                return TaskResult(False, "Cluster has no leader, can not reinitialize")
            if c.leader.name == a.name:
                return TaskResult(False, "I am the leader, can not reinitialize")
            source = c.leader.name
            log.info("reinitializing on request: re-cloning from %s", source)
            ok = self._reinitialize(Action(Kind.REINITIALIZE, source))
            return TaskResult(ok, "reinitialize done" if ok else f"reinitialize from {source} failed")
        return TaskResult(False, f"unknown task {kind}")

    def _noop(self, action: Action) -> bool:
        return True

    def _write_sync(self, action: Action) -> bool:
        return self.sync.write_sync(action.target or "")

    def _delete_sync(self, action: Action) -> bool:
        return self.sync.delete_sync()

    def _set_sync_names(self, action: Action) -> bool:
        return self.sync.set_names(action.target)

    def _initialize(self, action: Action) -> bool:
        a = self.agent
        if not a.dcs.initialize(""):
            log.info("another member won the bootstrap race")
            return False
        log.info("won the bootstrap race: initializing a new cluster")
        try:
            self.activity = "initializing new cluster"
            if a.pg.data_dir_empty():
                options = self.cfg.bootstrap.get("initdb") or []
                a.pg.initdb(list(options))
            self.write_config(standby=False, target=None)
            a.pg.start()
            a.pg.create_users(self.cfg.postgresql.superuser, self.cfg.postgresql.replication,
                              self.cfg.postgresql.rewind)
            self._bootstrap_users()
            sysid = a.pg.system_identifier() or ""
            a.dcs.ensure_lease(a.settings.ttl)
            if not a.dcs.acquire_leader(a.name):
                raise CtlError("could not take the leader lock after bootstrap")
            a.last_lock_renewal = a.clock()
            a.dcs.put(keys.INITIALIZE, sysid)
            a.dcs.put(keys.CONFIG, codec.dumps(st.bootstrap_dcs(self.cfg)), create=True)
            log.info("bootstrapped cluster %s (system identifier %s); acquired leader lock", a.scope, sysid)
            return True
        except CtlError:
            try:
                a.dcs.delete(keys.INITIALIZE)
            except CtlError:
                pass
            raise

    def _bootstrap_users(self) -> None:
        """`bootstrap.users: {name: {password, options: [createdb, ...]}}`: extra roles made once, at bootstrap.

        Raises:
            ConfigError: an option that is not a role attribute (never passed through to SQL).
        """
        from psycopg import sql

        users = self.cfg.bootstrap.get("users")
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
            self.agent.pg.execute(stmt)
            log.info("created bootstrap user %s", name)

    def _clone(self, action: Action) -> bool:
        a = self.agent
        source = self.conninfo(action.target or "", replication=True)
        if source is None:
            return False
        log.info("creating replica: pg_basebackup from %s", action.target)
        self.activity = "creating replica"
        a._publish()
        try:
            a.pg.basebackup(source)
        except CtlError:
            a.pg.remove_data_dir()
            raise
        return True

    def _start(self, *, standby: bool, target: str | None) -> None:
        """Write the configuration and start PostgreSQL; a failed start is remembered for decide()."""
        a = self.agent
        self.write_config(standby=standby, target=target)
        self.activity = "starting"
        try:
            a.pg.start()
        except CtlError:
            a.start_failed = True
            raise
        a.start_failed = False
        a.upstream = target
        a.follow_since = a.clock()

    def _start_replica(self, action: Action) -> bool:
        self._start(standby=True, target=action.target)
        log.info("started as a replica%s", f" of {action.target}" if action.target else " (no upstream yet)")
        return True

    def _start_primary(self, action: Action) -> bool:
        self._start(standby=False, target=None)
        log.info("started PostgreSQL as primary")
        return True

    def _acquire_lock(self, action: Action) -> bool:
        a = self.agent
        before = a.clock()
        a.dcs.ensure_lease(a.settings.ttl)
        if a.dcs.acquire_leader(a.name):
            a.last_lock_renewal = before
            log.info("acquired leader lock")
            return True
        log.info("could not acquire leader lock: another member holds it")
        return False

    def _renew_lock(self, action: Action) -> bool:
        a = self.agent
        before = a.clock()
        a.dcs.refresh_lease()
        if a.dcs.renew_leader(a.name):
            a.last_lock_renewal = before
            return True
        a.last_lock_renewal = None
        log.warning("lost leader lock")
        return False

    def _release_lock(self, action: Action) -> bool:
        a = self.agent
        a.last_lock_renewal = None
        return a.dcs.release_leader(a.name)

    def _promote(self, action: Action) -> bool:
        a = self.agent
        log.info("promoting PostgreSQL")
        self.activity = None
        old = a.pg.probe()
        a.pg.promote()
        a.upstream = None
        self._slots = None
        new = a.pg.probe()
        log.info("promoted: now primary on timeline %s", new.timeline)
        self._write_history(old.timeline, new.timeline)
        return True

    def _write_history(self, old_tl: int | None, new_tl: int | None) -> None:
        a = self.agent
        if not new_tl or (old_tl and new_tl <= old_tl):
            return
        entry = self._history_entry(new_tl)
        if entry is None:
            return
        cluster = a.dcs.get_cluster()
        history = [h for h in cluster.history if h.timeline < entry.timeline] + [entry]
        try:
            a.dcs.put(keys.HISTORY, codec.encode_history(history))
        except CtlError as exc:
            log.warning("cannot write history: %s", exc)

    def _history_entry(self, new_tl: int) -> HistoryEntry | None:
        """The last line of the new timeline's history file: parent timeline, switch LSN, reason."""
        path = os.path.join(self.agent.pg.data_dir, "pg_wal", f"{new_tl:08X}.history")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError:
            return None
        if not lines:
            return None
        fields = lines[-1].split("\t")
        try:
            tl, lsn = int(fields[0]), lsn_from_str(fields[1])
        except (ValueError, IndexError):
            return None
        reason = fields[2].strip() if len(fields) > 2 else ""
        ts = datetime.now(timezone.utc).isoformat()
        return HistoryEntry(timeline=tl, lsn=lsn, reason=reason, timestamp=ts, new_leader=self.agent.name)

    def _step_down(self, action: Action) -> bool:
        """Switchover: a clean, checkpointed shutdown (the replicas receive all WAL), then release the lock."""
        a = self.agent
        log.info("switchover to %s: stopping PostgreSQL cleanly, then releasing the leader lock", action.target)
        a.last_switchover_result = None
        self.activity = "stopping"
        a.pg.stop(mode="fast", checkpoint=True)
        a.upstream = None
        a.last_lock_renewal = None
        if a.dcs.release_leader(a.name):
            log.info("released leader lock for %s", action.target)
        return True

    def _clear_failover(self, action: Action) -> bool:
        a = self.agent
        c = a.cluster
        if c is None or c.failover is None or c.failover.is_empty:
            return True
        if self._reason.startswith("switchover refused") or "requested to take over, but" in self._reason:
            a.last_switchover_result = self._reason.split(": ", 1)[-1]
            log.warning("%s", self._reason)
        a.dcs.put(keys.FAILOVER, "{}", mod_revision=c.failover.mod_revision)
        return True

    def _demote(self, action: Action) -> bool:
        a = self.agent
        log.warning("demoting: stopping PostgreSQL immediately")
        a.last_lock_renewal = None
        a.pg.stop(mode="immediate")
        a.upstream = None
        return True

    def _follow(self, action: Action) -> bool:
        a = self.agent
        self.write_config(standby=True, target=action.target)
        a.pg.reload()
        a.upstream = action.target
        a.follow_since = a.clock()
        log.info("following %s", action.target)
        return True

    def _source_reachable(self, target: str) -> bool:
        """Destructive steps (rewind, re-clone) need a live source: never wipe data for a dead leader."""
        m = self._member(target)
        if m is None or not m.host:
            return False
        try:
            socket.create_connection((m.host, m.port), timeout=2).close()
            return True
        except OSError as exc:
            log.warning("not touching the data directory: %s at %s:%s is not reachable (%s)", target, m.host,
                        m.port, exc.strerror or exc)
            return False

    def _rewind(self, action: Action) -> bool:
        a = self.agent
        target = action.target or ""
        source = self.conninfo(target, replication=False)
        if source is None or not self._source_reachable(target):
            return False
        if a.pg.is_running():
            a.pg.stop(mode="fast")
        self.activity = "rewinding"
        log.info("running pg_rewind from %s", target)
        if not a.pg.rewind(source):
            if not self._source_reachable(target):
                return False
            log.warning("pg_rewind from %s failed: re-cloning", target)
            return self._reinitialize(action)
        return self._start_replica(action)

    def _reinitialize(self, action: Action) -> bool:
        a = self.agent
        if not self._source_reachable(action.target or ""):
            return False
        if a.pg.is_running():
            a.pg.stop(mode="fast")
        a.pg.remove_data_dir()
        return self._clone(action) and self._start_replica(action)

    def _create_slots(self, action: Action) -> bool:
        a = self.agent
        c = a.cluster
        if c is None or not st.use_slots(self.cfg, a.good_config):
            return True
        wanted = frozenset(slot_name(m.name) for m in c.members if m.name != a.name)
        if wanted != self._slots:
            a.pg.ensure_slots(sorted(wanted))
            self._slots = wanted
        return True

    def _update_status(self, action: Action) -> bool:
        a = self.agent
        c = a.cluster
        state = a._pg_state
        optime = state.wal_lsn if state is not None else None
        retain = tuple(sorted(m.name for m in c.members)) if c else ()
        if (optime, retain) == self._last_status:
            return True
        a.dcs.put(keys.STATUS, codec.encode_status(optime, None, retain))
        self._last_status = (optime, retain)
        return True

