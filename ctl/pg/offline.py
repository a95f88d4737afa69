"""The programs that need the local server stopped or not running at all: cloning (pg_basebackup), pg_rewind and
the control file. A mixin of ctl.pg.postgres.Postgres, which holds `_lock`, `files` (the DataDir) and `stop()`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ctl.errors import ConfigError, PgCommandError
from ctl.pg.datadir import DataDir
from ctl.pg.sqlaccess import first_line

log = logging.getLogger("ctl.pg.postgres")


class OfflineTools:
    data_dir: str
    files: DataDir
    _lock: threading.RLock

    def is_running(self) -> bool:  # pragma: no cover - provided by Postgres
        raise NotImplementedError

    def stop(self, mode: str = "fast", timeout: float = 60, checkpoint: bool = False) -> None:  # pragma: no cover
        raise NotImplementedError

    def _has_cluster(self) -> bool:  # pragma: no cover - provided by Postgres
        raise NotImplementedError

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
