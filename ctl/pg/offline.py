"""What is done to the data directory while the local server is stopped or not running at all: initdb, the
configuration files hactl writes, removal, cloning (pg_basebackup), pg_rewind and the control file.

A mixin of ctl.pg.postgres.Postgres, which holds the settings, `_lock`, `files` (the DataDir), `is_running()` and
`stop()`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import Any, Callable, Mapping, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ctl.config import PostgresqlSettings
from ctl.errors import ConfigError, PgCommandError
from ctl.pg import conf
from ctl.pg.datadir import DataDir
from ctl.pg.sqlaccess import first_line

log = logging.getLogger("ctl.pg.postgres")


class OfflineTools:
    settings: PostgresqlSettings
    name: str
    data_dir: str
    address: conf.Address
    socket_dir: str
    files: DataDir
    _lock: threading.RLock

    def is_running(self) -> bool:  # pragma: no cover - provided by Postgres
        raise NotImplementedError

    def stop(self, mode: str = "fast", timeout: float = 60, checkpoint: bool = False) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ data dir

    def data_dir_empty(self) -> bool:
        try:
            return not os.listdir(self.data_dir)
        except FileNotFoundError:
            return True

    def _has_cluster(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "PG_VERSION"))

    def remove_data_dir(self) -> None:
        """Delete the data directory (e.g. before a re-clone).

        Raises:
            PgCommandError: the server is running.
        """
        with self._lock:
            if self.is_running():
                raise PgCommandError(f"refusing to remove {self.data_dir}: PostgreSQL is running")
            shutil.rmtree(self.data_dir, ignore_errors=True)
            log.info("removed data directory %s", self.data_dir)

    def initdb(self, options: Sequence[str | Mapping[str, Any]] | None = None, timeout: float = 300) -> None:
        """Run initdb into an empty data directory; `options` is Patroni's `bootstrap.initdb` list.

        The superuser is created with the configured name and password (through --pwfile, never argv).

        Raises:
            ConfigError: bad options.  PgCommandError: the data directory is not empty, or initdb failed.
        """
        args = conf.initdb_args(options)
        with self._lock:
            if self.is_running():
                raise PgCommandError("cannot initdb: PostgreSQL is running")
            self.files.initdb(args, self.settings.superuser, timeout)
            log.info("initdb done in %s", self.data_dir)

    def write_config(
        self,
        parameters: Mapping[str, Any],
        pg_hba: Sequence[str],
        *,
        standby: bool,
        primary_conninfo: str | Mapping[str, Any] | None = None,
        primary_slot_name: str | None = None,
        recovery_target_timeline: str = "latest",
    ) -> bool:
        """Write postgresql.hactl.conf (+ the include in postgresql.conf), pg_hba.conf and standby.signal;
        True when any file changed (files are rewritten only when their content differs).

        `pg_hba` empty means conf.default_hba(). `primary_conninfo` gets application_name=<member name> unless
        it has one (so pg_stat_replication names the member). `primary_slot_name` is sanitized like Patroni.
        Takes effect on the next start(), or reload() for reloadable parameters (see PgState.pending_restart;
        primary_conninfo and primary_slot_name are reloadable, standby.signal needs a restart).

        Raises:
            ConfigError: a malformed conninfo or parameter name.  PgCommandError: no data directory.
        """
        if not self._has_cluster():
            raise PgCommandError(f"no PostgreSQL data directory in {self.data_dir}")
        conninfo = None
        if standby and primary_conninfo:
            _, params, password = conf.split_password(primary_conninfo)
            params.setdefault("application_name", self.name)
            conninfo = conf.build_conninfo(**params, password=password)
        params_out = conf.managed_parameters(
            parameters,
            address=self.address,
            socket_dir=self.socket_dir,
            hba_file=os.path.join(self.data_dir, "pg_hba.conf"),
            standby=standby,
            primary_conninfo=conninfo,
            primary_slot_name=conf.slot_name(primary_slot_name) if primary_slot_name else None,
            recovery_target_timeline=recovery_target_timeline,
        )
        hba = list(pg_hba) or conf.default_hba(self.settings.replication.username)
        su = self.settings.superuser
        files = self.files
        changed = files.update(conf.HACTL_CONF, conf.render_conf(params_out))
        changed |= files.update("pg_hba.conf", conf.render_hba(hba, su.username, bool(su.password)))
        changed |= files.update("postgresql.conf", conf.with_include(files.read("postgresql.conf") or ""))
        if standby:
            changed |= files.update("standby.signal", "")
        else:
            changed |= files.unlink("standby.signal")
        return changed

    # ------------------------------------------------------------------------------------------ cloning and rewind

    def basebackup(self, source_conninfo: str | Mapping[str, Any], timeout: float | None = None,
                   *, slot: str | None = None, options: Sequence[str] = (),
                   on_output: Callable[[str], None] | None = None) -> None:
        """Clone the source server with `pg_basebackup -X stream -c fast --progress` into an empty data directory.

        `slot` (a member name, sanitized) streams the backup's WAL through that existing slot on the source.
        `options` are more pg_basebackup arguments (`--max-rate=10M`, `--checkpoint=spread`: they replace the
        defaults they name); `on_output` gets each line of its output as it comes (progress). No timeout by
        default: a throttled backup of a big cluster takes as long as it takes (cancel it instead).
        On failure the data directory is left empty. Call write_config() before start().

        Raises:
            ConfigError: malformed conninfo.
            PgCommandError: running, data directory not empty, pg_basebackup failed or timed out.
        """
        with self._lock:
            if self.is_running():
                raise PgCommandError("cannot clone: PostgreSQL is running")
            self.files.basebackup(source_conninfo, slot, timeout, options=options, on_output=on_output)
            log.info("cloned %s with pg_basebackup", self.data_dir)

    def rewind(self, source_conninfo: str | Mapping[str, Any], timeout: float = 600) -> bool:
        """pg_rewind this data directory onto the source server; False on failure (then re-clone).

        Stops the server first (fast). A server that was not shut down cleanly (crash, kill -9 of a fenced
        primary) first gets crash recovery in single-user mode, as Patroni does, because pg_rewind needs a clean
        shutdown. A CHECKPOINT on the source makes its control file show its new timeline. Our config files are
        kept (pg_rewind copies the source's) and standby.signal is written, so the node can only start as a
        standby; call write_config() with a primary_conninfo before start().
        """
        with self._lock:
            try:
                self.stop()
                if not self.files.ensure_clean_shutdown():
                    return False
                _checkpoint_source(source_conninfo)
                return self.files.rewind(source_conninfo, timeout)
            except (PgCommandError, ConfigError) as exc:
                log.error("pg_rewind not possible: %s", exc)
                return False

    # ------------------------------------------------------------------------------------------ control file

    def controldata(self) -> dict[str, str]:
        """pg_controldata as a dict ("Database cluster state", "Latest checkpoint's TimeLineID", ...).

        Raises:
            PgCommandError: pg_controldata failed (e.g. no data directory).
        """
        return self.files.controldata()

    def system_identifier(self) -> str | None:
        """The data directory's system identifier, or None when there is no cluster or it cannot be read."""
        if not self._has_cluster():
            return None
        try:
            return self.controldata().get("Database system identifier")
        except PgCommandError:
            return None



def _checkpoint_source(source_conninfo: str | Mapping[str, Any]) -> None:
    """CHECKPOINT on the rewind source so that its control file shows its current timeline (best effort: needs
    superuser or pg_checkpoint, which create_users grants to the rewind role)."""
    try:
        params = dict(source_conninfo) if isinstance(source_conninfo, Mapping) else \
            conninfo_to_dict(source_conninfo)
        params.setdefault("connect_timeout", 5)
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        log.warning("CHECKPOINT on the rewind source failed (pg_rewind may see a stale timeline): %s",
                    first_line(exc))
