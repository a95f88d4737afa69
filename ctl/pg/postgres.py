"""Control and probing of the local PostgreSQL server of one node: the facade the agent uses.

Usage, as the HA loop sees it::

    pg = Postgres(cfg.postgresql, cfg.name, os_user="postgres")   # bin_dir autodetected (ctl.pg.binaries)
    pg.initdb(["data-checksums"]); pg.write_config(params, hba, standby=False); pg.start(); pg.create_users(...)
    pg.basebackup(leader_conninfo, slot=me); pg.write_config(params, hba, standby=True, primary_conninfo=...)
    state = pg.probe()                                                  # never raises

After `basebackup()` and `rewind()` the data directory holds files copied from the source server, so call
`write_config()` before `start()` (rewind restores our config files and leaves `standby.signal` in place, so a
rewound node can only come up as a standby; it still needs a primary_conninfo to stream).

FENCING (details in ctl.pg.postmaster and ctl.pg.fence): `start()` runs the postmaster as a child of the agent,
guarded by a fence process that shuts it down immediately (SIGQUIT) when the agent dies, even by kill -9, unless
the agent disarmed it with `set_fence(False)` (pause). A postmaster found running that we did not start is
adopted (probe/stop/reload/promote work, `owns_process` is False) and gets a fence on the next `set_fence()`.

Local connections go over the unix socket in `socket_dir` as the superuser (pg_hba gets a managed first line for
that, see ctl.pg.conf). Running as root: see ctl.pg.osuser. Secrets: passwords never appear in argv or in
messages; pg_basebackup and pg_rewind read them from a 0600 pgpass file (PGPASSFILE), initdb from --pwfile.
Thread safety: start/stop/restart/promote/initdb/basebackup/rewind are serialized by a lock; probe() and
is_running() may be called from any thread (e.g. REST handlers) at any time.
"""


from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from functools import cached_property
from typing import Any, Callable

import psycopg

from ctl.config import PgUser, PostgresqlSettings
from ctl.errors import ConfigError, PgCommandError
from ctl.pg import conf
from ctl.pg.binaries import find_bin_dir
from ctl.pg.datadir import DataDir
from ctl.pg.osuser import OsUser, check_reachable, chown, resolve_os_user
from ctl.pg.probe import PgState
from ctl.pg.postmaster import Postmaster
from ctl.pg.process import output_tail
from ctl.pg.offline import OfflineTools
from ctl.pg.sqlaccess import SqlAccess, first_line as _first_line

__all__ = ["Postgres", "PgState"]

log = logging.getLogger(__name__)

# Connection errors during startup that waiting will not cure (the server is up and says no).
_REFUSED_FOR_GOOD = ("authentication failed", "no pg_hba.conf entry", "does not exist")
# The postmaster answers, but recovery has not reached a consistent state yet.
_STARTING = ("not yet accepting connections", "the database system is starting up")
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes including "/.s.PGSQL.65535"


class Postgres(SqlAccess, OfflineTools):
    """One node's PostgreSQL: data directory, postmaster process, SQL access as the superuser."""

    def __init__(
        self,
        settings: PostgresqlSettings,
        name: str,
        *,
        os_user: str | None = None,
        bin_dir: str | None = None,
        log_file: str | None = None,
        socket_dir: str | None = None,
    ) -> None:
        """`socket_dir` defaults to the first `unix_socket_directories` parameter (relative to the data
        directory, as PostgreSQL reads it), else `<data_dir>.sock` (created 0700 for the OS user). `log_file`
        (the postmaster's stdout/stderr) defaults to `<data_dir>.log`. `os_user` matters only when root
        (default postgres); `bin_dir` defaults to settings.bin_dir, then autodetection.

        Raises:
            ConfigError: no data_dir, or a bad listen/connect_address.
        """
        if not settings.data_dir:
            raise ConfigError("postgresql.data_dir is required")
        self.settings = settings
        self.name = name
        self.data_dir = os.path.abspath(os.path.expanduser(settings.data_dir))
        self.address = conf.parse_address(settings.listen, settings.connect_address)
        self.log_file = os.path.abspath(log_file or self.data_dir.rstrip("/") + ".log")
        self._bin_dir_arg = bin_dir or settings.bin_dir
        self._os_user_name = os_user
        configured = str(settings.parameters.get("unix_socket_directories") or "").split(",")[0].strip()
        if configured and not os.path.isabs(configured):  # PostgreSQL resolves it from the data directory
            configured = os.path.join(self.data_dir, configured)
        self._own_socket_dir = not (socket_dir or configured)
        self.socket_dir = os.path.normpath(os.path.abspath(socket_dir or configured or self._default_socket_dir()))
        self._postmaster = Postmaster(self.data_dir, self.log_file)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The host other nodes use to reach this server (connect_address, else the listen address)."""
        return self.address.connect_host

    @property
    def port(self) -> int:
        """The port the server listens on (and the one local connections use)."""
        return self.address.port

    @property
    def connect_port(self) -> int:
        return self.address.connect_port

    @property
    def conn_url(self) -> str:
        """`postgres://host:port/postgres`, the member's conn_url as Patroni publishes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgres://{host}:{self.connect_port}/postgres"

    def _default_socket_dir(self) -> str:
        path = self.data_dir.rstrip("/") + ".sock"
        if len(path) <= _MAX_SOCKET_PATH:
            return path
        return os.path.join(tempfile.gettempdir(), f"hactl-{conf.slot_name(self.name)[:40]}-{self.port}")

    @cached_property
    def bin_dir(self) -> str:
        """Raises: PgCommandError when no PostgreSQL binaries are found."""
        return find_bin_dir(self._bin_dir_arg)

    @cached_property
    def os_user(self) -> OsUser:
        """Raises: PgCommandError when root and the OS user is missing (see ensure_os_user)."""
        return resolve_os_user(self._os_user_name)

    def conninfo(self, *, user: PgUser | None = None, dbname: str = "postgres",
                 connect_timeout: int = 3) -> dict[str, Any]:
        """psycopg.connect() keyword arguments for a local connection over the unix socket (superuser default).

        The dict holds the password: never log it.
        """
        user = user or self.settings.superuser
        params: dict[str, Any] = {
            "host": self.socket_dir, "port": self.port, "user": user.username, "dbname": dbname,
            "connect_timeout": max(2, int(connect_timeout)), "application_name": "hactl",
        }
        if user.password:
            params["password"] = user.password
        return params

    @cached_property
    def files(self) -> DataDir:
        """The data directory's files and offline tools.

        Raises:
            PgCommandError: no binaries, or the OS user is missing (on first use).
        """
        return DataDir(self.data_dir, self.bin_dir, self.os_user)

    # ------------------------------------------------------------------------------------------ process

    @property
    def pid(self) -> int | None:
        """The postmaster's PID (ours or adopted), or None."""
        return self._postmaster.pid

    @property
    def owns_process(self) -> bool:
        """True when the running postmaster is our child (not adopted)."""
        return self._postmaster.owns_process

    @property
    def fenced(self) -> bool:
        """True when a fence guards the running postmaster (see set_fence)."""
        return self._postmaster.fenced

    @property
    def fence_pid(self) -> int | None:
        """The fence process's PID, if one runs."""
        return self._postmaster.fence_pid

    def set_fence(self, armed: bool) -> None:
        """Arm (False: disarm, in pause) the fence that stops PostgreSQL when the agent dies, and give a running
        postmaster that has none (adopted) a fence. Cheap when nothing changes: call it every loop.

        Raises:
            PgCommandError: a fence could not be started.
        """
        self._postmaster.set_fence(armed)

    def is_running(self) -> bool:
        return self._postmaster.pid is not None

    def start(self, timeout: float = 60, *, wait_ready: bool = True,
              cancelled: Callable[[], bool] | None = None) -> None:
        """Start the postmaster as a fenced child and wait until it accepts connections (read-write, or
        read-only for a standby that reached consistency). Any thread may call it (see FENCING). With
        `wait_ready=False` (a standby), return as soon as the server answers at all, even with "not yet accepting
        connections": reaching consistency may take long, and the caller watches it with probe(). `cancelled`
        ends the wait early (the server is left running, the error says so).

        No-op when a postmaster already runs on this data directory. On timeout the server is left running
        (a standby may still be catching up) and the error says so.

        Raises:
            PgCommandError: no data directory, the postmaster exited (with the log's last lines), or timeout.
        """
        with self._lock:
            if self.is_running():
                log.info("PostgreSQL already running (pid %s)", self.pid)
                return
            if not self._has_cluster():
                raise PgCommandError(f"cannot start PostgreSQL: no data directory in {self.data_dir}")
            check_reachable(self.data_dir, self.os_user)
            self._prepare_socket_dir()
            offset = self._postmaster.spawn(self.bin_dir, self.os_user)
            log.info("started PostgreSQL (pid %s, port %s)", self.pid, self.port)
            self._wait_accepting(timeout, offset, wait_ready, cancelled)

    def _wait_accepting(self, timeout: float, log_offset: int, wait_ready: bool = True,
                        cancelled: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            code = self._postmaster.exit_code()
            if code is not None:
                raise PgCommandError(
                    f"PostgreSQL exited during startup (code {code}); log {self.log_file}: "
                    f"{output_tail(self._postmaster.log_since(log_offset))}")
            try:
                with psycopg.connect(**self.conninfo(connect_timeout=2), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = _first_line(exc)
                if "Hot standby mode is disabled" in str(exc):  # hot_standby=off: a standby never lets us in
                    log.info("PostgreSQL is up as a standby without hot_standby; not waiting for connections")
                    return
                if not wait_ready and any(m in str(exc) for m in _STARTING):
                    log.info("PostgreSQL is up and in recovery (%s); not waiting for consistency", last)
                    return
                if any(m in last for m in _REFUSED_FOR_GOOD):  # up, but it will never let us in: say so now
                    raise PgCommandError(
                        f"PostgreSQL (pid {self.pid}) is running but refuses the superuser over the local socket: "
                        f"{last}") from None
            if cancelled is not None and cancelled():
                raise PgCommandError(f"stopped waiting for PostgreSQL (pid {self.pid}) to start: cancelled")
            if time.monotonic() >= deadline:
                raise PgCommandError(
                    f"PostgreSQL (pid {self.pid}) did not accept connections within {timeout:g}s and is left "
                    f"running: {last}; log {self.log_file}: {output_tail(self._postmaster.log_since(log_offset))}")
            time.sleep(0.1)

    def _prepare_socket_dir(self) -> None:
        check_reachable(self.socket_dir, self.os_user)
        existed = os.path.isdir(self.socket_dir)
        if existed and self._own_socket_dir:
            owner = os.stat(self.socket_dir).st_uid
            if owner not in (0, os.geteuid(), self.os_user.uid):  # e.g. pre-created in /tmp by someone else
                raise PgCommandError(f"socket directory {self.socket_dir} belongs to uid {owner}; remove it")
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        if self._own_socket_dir or not existed:
            chown(self.socket_dir, self.os_user)
            if self._own_socket_dir:
                os.chmod(self.socket_dir, 0o700)

    def stop(self, mode: str = "fast", timeout: float = 60, checkpoint: bool = False) -> None:
        """Stop the postmaster (ours or adopted) and wait until it is gone; no-op when not running.

        `mode` is smart, fast or immediate (pg_ctl's). `checkpoint=True` runs CHECKPOINT first so that a
        primary's shutdown checkpoint is short. After `timeout` the shutdown is escalated to immediate.

        Raises:
            PgCommandError: an unknown mode, or the postmaster survived an immediate shutdown.
        """
        with self._lock:
            if checkpoint and mode in ("smart", "fast") and self.is_running():
                try:
                    self._query("CHECKPOINT", statement_timeout=timeout)
                except PgCommandError as exc:
                    log.warning("CHECKPOINT before shutdown failed: %s", exc)
            self._postmaster.stop(mode, timeout)

    def restart(self, timeout: float = 60) -> None:
        """stop(fast) then start().

        Raises:
            PgCommandError: as stop() and start().
        """
        with self._lock:
            self.stop(timeout=timeout)
            self.start(timeout=timeout)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration files.

        Raises:
            PgCommandError: PostgreSQL is not running.
        """
        if not self._postmaster.signal(signal.SIGHUP):
            raise PgCommandError("cannot reload: PostgreSQL is not running")

    def promote(self, timeout: float = 30) -> None:
        """Promote a standby with pg_promote() and wait until it leaves recovery; no-op on a primary.

        Then a CHECKPOINT runs in a background thread, as Patroni does: pg_rewind reads the source's timeline
        from its control file, which shows the new timeline only after the first checkpoint, so without it an
        old primary rewound right after a failover would be told "no rewind required".

        Raises:
            PgCommandError: not running, or still in recovery after `timeout`.
        """
        with self._lock:
            rows = self._query("SELECT pg_is_in_recovery()")
            if not rows[0][0]:
                return
            wait = max(1, int(timeout))
            rows = self._query("SELECT pg_promote(true, %s)", (wait,), statement_timeout=timeout + 5)
            if not rows[0][0]:
                raise PgCommandError(f"promotion did not complete within {wait}s")
            log.info("promoted PostgreSQL")
            threading.Thread(target=self._checkpoint_quietly, name="pg-checkpoint-after-promote",
                             daemon=True).start()

    def _checkpoint_quietly(self) -> None:
        try:
            self._query("CHECKPOINT")
        except PgCommandError as exc:
            log.warning("CHECKPOINT after promotion failed: %s", exc)
