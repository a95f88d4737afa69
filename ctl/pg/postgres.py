"""Control and probing of the local PostgreSQL server of one node: the only place hactl runs PostgreSQL programs.

Usage, as the HA loop sees it::

    pg = Postgres(cfg.postgresql, cfg.name, os_user="postgres")   # bin_dir autodetected (ctl.pg.binaries)
    pg.initdb(["data-checksums"]); pg.write_config(params, hba, standby=False); pg.start(); pg.create_users(...)
    pg.basebackup(leader_conninfo, slot=me); pg.write_config(params, hba, standby=True, primary_conninfo=...)
    state = pg.probe()                                                  # never raises

After `basebackup()` and `rewind()` the data directory holds files copied from the source server, so call
`write_config()` before `start()` (rewind restores our config files and leaves `standby.signal` in place, so a
rewound node can only come up as a standby; it still needs a primary_conninfo to stream).

FENCING. If the agent dies (kill -9) while its PostgreSQL is a primary, that primary must stop accepting writes,
or a promoted replica would give two writable primaries. hactl therefore does not daemonize PostgreSQL with
`pg_ctl start`: `start()` runs the postmaster (`postgres -D <data_dir>`) as a *direct child* of the agent. In the
forked child, CPython first drops privileges to the OS user (setgroups/setregid/setreuid from Popen's
user/group/extra_groups), then our preexec_fn sets `prctl(PR_SET_PDEATHSIG, SIGQUIT)` (after setuid, because a
credential change clears the death signal) and exits if `getppid()` shows the agent already died. When the agent
dies for any reason the kernel sends SIGQUIT to the postmaster: an immediate shutdown that ends every backend at
once, so no further writes are acknowledged (measured in tests/integration/test_pg.py: gone within ~2 s).
  * PR_SET_PDEATHSIG fires when the *thread* that forked the postmaster exits, not only the process. Call
    `start()` (and `restart()`) from a long-lived thread, i.e. the HA loop thread, never from a short-lived worker.
  * The postmaster's stdout/stderr go to `log_file` (default `<data_dir>.log`).
  * A postmaster hactl did not start (found through `postmaster.pid`, e.g. started by hand) is *adopted*: probe,
    stop, reload and promote work on it, but it is not fenced (`owns_process` is False); stop and start it again
    to get fencing back. A stale `postmaster.pid` (dead or recycled PID) is removed on `start()`.

`stop()` signals the postmaster (smart=SIGTERM, fast=SIGINT, immediate=SIGQUIT; what `pg_ctl stop -m` sends) and
waits for the PID to go: by `wait()` for our child, by polling for an adopted one. After `timeout` it escalates
to immediate. It never SIGKILLs the postmaster (that would leave backends serving clients).

Running as root: see ctl.pg.osuser. Secrets: passwords never appear in argv or in messages; pg_basebackup and
pg_rewind get them from a 0600 pgpass file in a private temporary directory (PGPASSFILE), initdb from --pwfile.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Iterable, Iterator, Mapping, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from ctl.config import PgUser, PostgresqlSettings
from ctl.errors import ConfigError, PgCommandError
from ctl.pg import conf
from ctl.pg.binaries import binary, find_bin_dir
from ctl.pg.osuser import OsUser, chown, resolve_os_user
from ctl.pg.probe import PROBE_SQL, PgState, state_from_row
from ctl.pg.process import child_env, is_postmaster_of, pid_alive, read_postmaster_pid, run, spawn

__all__ = ["Postgres", "PgState"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_CLEAN_STATES = ("shut down", "shut down in recovery")
_CONFIG_FILES = ("postgresql.conf", conf.HACTL_CONF, "pg_hba.conf", "pg_ident.conf")
# pg_rewind needs these on the source server when it connects as a non-superuser (PostgreSQL docs, pg_rewind).
_REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes including "/.s.PGSQL.65535"


class Postgres:
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
        """`socket_dir` defaults to the first `unix_socket_directories` parameter, else `<data_dir>.sock`.

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
        self._own_socket_dir = not (socket_dir or configured)
        self.socket_dir = os.path.abspath(socket_dir or configured or self._default_socket_dir())
        self._proc: subprocess.Popen | None = None
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
        """psycopg.connect() keyword arguments for a local connection over the unix socket (superuser default)."""
        user = user or self.settings.superuser
        params: dict[str, Any] = {
            "host": self.socket_dir, "port": self.port, "user": user.username, "dbname": dbname,
            "connect_timeout": max(2, int(connect_timeout)), "application_name": "hactl",
        }
        if user.password:
            params["password"] = user.password
        return params

    # ------------------------------------------------------------------------------------------ data dir

    def data_dir_empty(self) -> bool:
        try:
            return not os.listdir(self.data_dir)
        except FileNotFoundError:
            return True

    def _has_cluster(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "PG_VERSION"))

    def _prepare_data_dir(self) -> None:
        """Create the (empty) data directory with mode 0700, owned by the OS user."""
        os.makedirs(os.path.dirname(self.data_dir), exist_ok=True)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        chown(self.data_dir, self.os_user)
        os.chmod(self.data_dir, 0o700)

    def _clear_data_dir(self) -> None:
        """Empty the data directory but keep it (after a failed initdb/basebackup)."""
        for entry in os.listdir(self.data_dir) if os.path.isdir(self.data_dir) else ():
            path = os.path.join(self.data_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

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
            if not self.data_dir_empty():
                raise PgCommandError(f"cannot initdb: data directory {self.data_dir} is not empty")
            self._prepare_data_dir()
            su = self.settings.superuser
            with self._private_file("pwfile", su.password + "\n" if su.password else None) as pwfile:
                argv = [binary(self.bin_dir, "initdb"), "-D", self.data_dir, f"--username={su.username}", *args]
                if pwfile:
                    argv.append(f"--pwfile={pwfile}")
                proc = run(argv, self.os_user, timeout=timeout, env=child_env({"LC_MESSAGES": "C"}, self.os_user))
            if proc.returncode != 0:
                self._clear_data_dir()
                raise PgCommandError(f"initdb failed (exit {proc.returncode}): {_tail(proc.stdout)}")
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
    ) -> None:
        """Write postgresql.hactl.conf (+ the include in postgresql.conf), pg_hba.conf and standby.signal.

        `pg_hba` empty means conf.default_hba(). `primary_conninfo` gets application_name=<member name> unless
        it has one (so pg_stat_replication names the member). `primary_slot_name` is sanitized like Patroni.
        Takes effect on the next start(), or reload() for reloadable parameters (see PgState.pending_restart).

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
        self._write(conf.HACTL_CONF, conf.render_conf(params_out))
        self._write("pg_hba.conf", conf.render_hba(hba, su.username, bool(su.password)))
        main = os.path.join(self.data_dir, "postgresql.conf")
        try:
            with open(main, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        wanted = conf.with_include(current)
        if wanted != current:
            self._write("postgresql.conf", wanted)
        signal_file = os.path.join(self.data_dir, "standby.signal")
        if standby:
            self._write("standby.signal", "")
        elif os.path.exists(signal_file):
            os.unlink(signal_file)

    def _write(self, name: str, text: str) -> None:
        """Atomically replace a file in the data directory: mode 0600, owned by the OS user."""
        path = os.path.join(self.data_dir, name)
        tmp = f"{path}.hactl-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        chown(tmp, self.os_user)
        os.replace(tmp, path)

    @contextmanager
    def _private_file(self, name: str, content: str | None) -> Iterator[str | None]:
        """A 0600 file only the OS user can read, in a fresh 0700 temp dir, removed afterwards (None: no file)."""
        if content is None:
            yield None
            return
        tmpdir = tempfile.mkdtemp(prefix="hactl-")
        try:
            chown(tmpdir, self.os_user)
            path = os.path.join(tmpdir, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
            chown(path, self.os_user)
            yield path
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    @contextmanager
    def _source_env(self, source_conninfo: str | Mapping[str, Any]) -> Iterator[tuple[str, dict[str, str]]]:
        """(conninfo without password, environment with PGPASSFILE) for pg_basebackup / pg_rewind."""
        conninfo, params, password = conf.split_password(source_conninfo)
        line = conf.pgpass_line(params.get("user"), password) if password else None
        with self._private_file("pgpass", line) as pgpass:
            extra = {"LC_MESSAGES": "C"}
            if pgpass:
                extra["PGPASSFILE"] = pgpass
            yield conninfo, child_env(extra, self.os_user)

    # ------------------------------------------------------------------------------------------ process

    @property
    def pid(self) -> int | None:
        """The postmaster's PID: our child if alive, else a live postmaster from postmaster.pid, else None."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                return proc.pid
            self._proc = None
        pid = read_postmaster_pid(self.data_dir)
        if pid is not None and is_postmaster_of(pid, self.data_dir):
            return pid
        return None

    @property
    def owns_process(self) -> bool:
        """True when the running postmaster is our child, i.e. fenced by the parent-death signal."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 60) -> None:
        """Start the postmaster as a fenced child (see FENCING) and wait until it accepts connections.

        Call from a long-lived thread. Returns at once when a postmaster already runs on this data directory.
        On timeout the server is left running (a standby may still be catching up); the error says so.

        Raises:
            PgCommandError: no data directory, the postmaster exited (with the log's last lines), or timeout.
        """
        with self._lock:
            if self.is_running():
                log.info("PostgreSQL already running (pid %s)", self.pid)
                return
            if not self._has_cluster():
                raise PgCommandError(f"cannot start PostgreSQL: no data directory in {self.data_dir}")
            stale = os.path.join(self.data_dir, "postmaster.pid")
            if os.path.exists(stale):
                log.info("removing stale postmaster.pid from %s", self.data_dir)
                os.unlink(stale)
            self._prepare_socket_dir()
            offset = _file_size(self.log_file)
            fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                chown(self.log_file, self.os_user)
                self._proc = spawn([binary(self.bin_dir, "postgres"), "-D", self.data_dir], self.os_user,
                                   stdout=fd, death_signal=signal.SIGQUIT)
            finally:
                os.close(fd)
            log.info("started PostgreSQL (pid %s, port %s)", self._proc.pid, self.port)
            self._wait_accepting(self._proc, timeout, offset)

    def _wait_accepting(self, proc: subprocess.Popen, timeout: float, log_offset: int) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise PgCommandError(
                    f"PostgreSQL exited during startup (code {code}); log {self.log_file}: "
                    f"{_tail(_read_from(self.log_file, log_offset))}")
            try:
                with psycopg.connect(**self.conninfo(connect_timeout=2), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = _first_line(exc)
            if time.monotonic() >= deadline:
                raise PgCommandError(
                    f"PostgreSQL (pid {proc.pid}) did not accept connections within {timeout:g}s and is left "
                    f"running: {last}; log {self.log_file}: {_tail(_read_from(self.log_file, log_offset))}")
            time.sleep(0.1)

    def _prepare_socket_dir(self) -> None:
        existed = os.path.isdir(self.socket_dir)
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        if self._own_socket_dir or not existed:
            chown(self.socket_dir, self.os_user)
            if self._own_socket_dir:
                os.chmod(self.socket_dir, 0o700)

    def stop(self, mode: str = "fast", timeout: float = 60, checkpoint: bool = False) -> None:
        """Stop the postmaster (ours or adopted) and wait until it is gone; no-op when not running.

        `checkpoint=True` runs CHECKPOINT first so that a primary's shutdown checkpoint is short. After
        `timeout` the shutdown is escalated to immediate.

        Raises:
            PgCommandError: an unknown mode, or the postmaster survived an immediate shutdown.
        """
        if mode not in _STOP_SIGNALS:
            raise PgCommandError(f"unknown shutdown mode {mode!r} (smart, fast, immediate)")
        with self._lock:
            pid = self.pid
            if pid is None:
                return
            if checkpoint and mode != "immediate":
                try:
                    self._query("CHECKPOINT", statement_timeout=timeout)
                except PgCommandError as exc:
                    log.warning("CHECKPOINT before shutdown failed: %s", exc)
            log.info("stopping PostgreSQL (pid %s, mode %s)", pid, mode)
            _signal(pid, _STOP_SIGNALS[mode])
            if self._wait_gone(pid, timeout):
                return
            if mode != "immediate":
                log.warning("PostgreSQL (pid %s) did not stop within %gs; immediate shutdown", pid, timeout)
                _signal(pid, signal.SIGQUIT)
                if self._wait_gone(pid, 15):
                    return
            raise PgCommandError(f"PostgreSQL (pid {pid}) did not stop")

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def restart(self, timeout: float = 60) -> None:
        """stop(fast) then start(); call from a long-lived thread (see FENCING).

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
        pid = self.pid
        if pid is None:
            raise PgCommandError("cannot reload: PostgreSQL is not running")
        _signal(pid, signal.SIGHUP)

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

    # ------------------------------------------------------------------------------------------ SQL

    def probe(self) -> PgState:
        """One SQL round trip describing the server; never raises (running=False, or error=<why>)."""
        if not self.is_running():
            return PgState(running=False)
        try:
            with psycopg.connect(**self.conninfo(connect_timeout=2), autocommit=True, row_factory=dict_row,
                                 options="-c statement_timeout=5000") as conn:
                row = conn.execute(PROBE_SQL).fetchone()
            return state_from_row(row)
        except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
            return PgState(running=self.is_running(), error=_first_line(exc))

    def execute(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
        """Run one statement as the superuser (autocommit); rows, or [] for statements without a result.

        Raises:
            PgCommandError: connection or statement failed.
        """
        return self._query(query, params)

    def _query(self, query: Any, params: Any = None, *, statement_timeout: float | None = None) -> list[tuple]:
        kwargs: dict[str, Any] = {}
        if statement_timeout:
            kwargs["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
        try:
            with psycopg.connect(**self.conninfo(), autocommit=True, **kwargs) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise PgCommandError(f"SQL failed on {self.name}: {_first_line(exc)}") from None

    def create_users(self, superuser: PgUser, replication: PgUser, rewind: PgUser | None = None) -> None:
        """Set the superuser's password; create/alter the replication role (REPLICATION LOGIN) and the rewind
        role with the function grants pg_rewind needs. Statement logging is off in this session so that
        passwords do not reach the server log.

        Raises:
            PgCommandError: a statement failed.
        """
        try:
            with psycopg.connect(**self.conninfo(), autocommit=True) as conn:
                for setting in ("log_statement = 'none'", "log_min_error_statement = 'panic'",
                                "log_min_duration_statement = -1"):
                    conn.execute(f"SET {setting}")

                def upsert(user: PgUser, attrs: str) -> None:
                    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user.username,)).fetchone()
                    verb = "ALTER" if exists else "CREATE"
                    password = sql.Literal(user.password) if user.password else sql.SQL("NULL")
                    conn.execute(sql.SQL("{} ROLE {} WITH {} PASSWORD {}").format(
                        sql.SQL(verb), sql.Identifier(user.username), sql.SQL(attrs), password))

                if superuser.password:
                    upsert(superuser, "SUPERUSER LOGIN")
                if replication.username != superuser.username:
                    upsert(replication, "REPLICATION LOGIN")
                if rewind and rewind.username != superuser.username:
                    upsert(rewind, "LOGIN")
                    for fn in _REWIND_FUNCTIONS:
                        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                            sql.SQL(fn), sql.Identifier(rewind.username)))
                    if conn.info.server_version >= 150000:  # lets rewind() CHECKPOINT the source first
                        conn.execute(sql.SQL("GRANT pg_checkpoint TO {}").format(sql.Identifier(rewind.username)))
        except psycopg.Error as exc:
            raise PgCommandError(f"creating users failed: {_first_line(exc)}") from None
        log.info("users ready: %s", ", ".join(u.username for u in (superuser, replication, rewind) if u))

    def replication_slots(self) -> dict[str, dict[str, Any]]:
        """Physical slots: {name: {"active": bool, "restart_lsn": int | None}}.

        Raises:
            PgCommandError: the query failed.
        """
        rows = self._query("SELECT slot_name, active, (restart_lsn - '0/0'::pg_lsn)::bigint "
                           "FROM pg_replication_slots WHERE slot_type = 'physical'")
        return {r[0]: {"active": r[1], "restart_lsn": r[2]} for r in rows}

    def ensure_slots(self, names: Iterable[str]) -> list[str]:
        """Create the missing physical slots (names sanitized with conf.slot_name, WAL reserved at once).
        Returns the names created.

        Raises:
            PgCommandError: a query failed.
        """
        existing = self.replication_slots()
        created = []
        for name in sorted({conf.slot_name(n) for n in names} - set(existing)):
            self._query("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
            created.append(name)
            log.info("created replication slot %s", name)
        return created

    def drop_slots_except(self, keep: Iterable[str]) -> list[str]:
        """Drop the physical slots not in `keep` (sanitized); active ones are kept. Returns the names dropped.

        Raises:
            PgCommandError: a query failed.
        """
        wanted = {conf.slot_name(n) for n in keep}
        dropped = []
        for name, info in sorted(self.replication_slots().items()):
            if name in wanted or info["active"]:
                continue
            self._query("SELECT pg_drop_replication_slot(%s)", (name,))
            dropped.append(name)
            log.info("dropped replication slot %s", name)
        return dropped

    # ------------------------------------------------------------------------------------------ cloning

    def basebackup(self, source_conninfo: str | Mapping[str, Any], timeout: float = 600,
                   *, slot: str | None = None) -> None:
        """Clone the source server with `pg_basebackup -X stream -c fast` into an empty data directory.

        `slot` (a member name, sanitized) streams the backup's WAL through that existing slot on the source.
        On failure the data directory is left empty. Call write_config() before start().

        Raises:
            PgCommandError: running, data directory not empty, pg_basebackup failed or timed out.
        """
        with self._lock:
            if self.is_running():
                raise PgCommandError("cannot clone: PostgreSQL is running")
            if not self.data_dir_empty():
                raise PgCommandError(f"cannot clone: data directory {self.data_dir} is not empty")
            self._prepare_data_dir()
            with self._source_env(source_conninfo) as (conninfo, env):
                argv = [binary(self.bin_dir, "pg_basebackup"), "-D", self.data_dir, "-X", "stream",
                        "-c", "fast", "-w", "-d", conninfo]
                if slot:
                    argv += ["-S", conf.slot_name(slot)]
                try:
                    proc = run(argv, self.os_user, timeout=timeout, env=env)
                except PgCommandError:
                    self._clear_data_dir()
                    raise
            if proc.returncode != 0:
                self._clear_data_dir()
                raise PgCommandError(f"pg_basebackup failed (exit {proc.returncode}): {_tail(proc.stdout)}")
            log.info("cloned %s with pg_basebackup", self.data_dir)

    def rewind(self, source_conninfo: str | Mapping[str, Any], timeout: float = 600) -> bool:
        """pg_rewind this (stopped or running) data directory onto the source server; False on failure.

        Stops the server first. A server that was not shut down cleanly (crash, kill -9 of a fenced primary)
        first gets crash recovery in single-user mode, as Patroni does, because pg_rewind needs a clean
        shutdown. Our config files are kept (pg_rewind copies the source's) and standby.signal is written, so
        the node can only start as a standby; call write_config() with a primary_conninfo before start().
        """
        with self._lock:
            try:
                self.stop()
                if not self._ensure_clean_shutdown():
                    return False
                saved = self._read_config_files()
                _checkpoint_source(source_conninfo)
                with self._source_env(source_conninfo) as (conninfo, env):
                    argv = [binary(self.bin_dir, "pg_rewind"), "-D", self.data_dir, f"--source-server={conninfo}",
                            "--no-ensure-shutdown"]
                    proc = run(argv, self.os_user, timeout=timeout, env=env)
            except (PgCommandError, ConfigError) as exc:
                log.error("pg_rewind not possible: %s", exc)
                return False
            self._restore_config_files(saved)
            self._write("standby.signal", "")
            if proc.returncode != 0:
                log.error("pg_rewind failed (exit %s): %s", proc.returncode, _tail(proc.stdout))
                return False
            log.info("pg_rewind done: %s", _tail(proc.stdout, 2))
            return True

    def _ensure_clean_shutdown(self) -> bool:
        """Crash recovery in single-user mode when the control file says the server did not shut down cleanly.

        Raises:
            PgCommandError: pg_controldata failed.
        """
        state = self.controldata().get("Database cluster state", "")
        if state in _CLEAN_STATES:
            return True
        log.info("data directory state is %r; crash recovery in single-user mode before pg_rewind", state)
        for name in ("standby.signal", "recovery.signal"):  # single-user mode refuses standby mode
            path = os.path.join(self.data_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        argv = [binary(self.bin_dir, "postgres"), "--single", "-F", "-D", self.data_dir,
                "-c", "archive_mode=off", "template1"]
        proc = run(argv, self.os_user, timeout=300, stdin_data="")
        state = self.controldata().get("Database cluster state", "")
        if state not in _CLEAN_STATES:
            log.error("single-user crash recovery left state %r: %s", state, _tail(proc.stdout))
            return False
        return True

    def _read_config_files(self) -> dict[str, bytes]:
        saved = {}
        for name in _CONFIG_FILES:
            try:
                with open(os.path.join(self.data_dir, name), "rb") as f:
                    saved[name] = f.read()
            except FileNotFoundError:
                pass
        return saved

    def _restore_config_files(self, saved: Mapping[str, bytes]) -> None:
        for name, content in saved.items():
            self._write(name, content.decode("utf-8", "replace"))

    # ------------------------------------------------------------------------------------------ control file

    def controldata(self) -> dict[str, str]:
        """pg_controldata as a dict ("Database cluster state", "Latest checkpoint's TimeLineID", ...).

        Raises:
            PgCommandError: pg_controldata failed (e.g. no data directory).
        """
        proc = run([binary(self.bin_dir, "pg_controldata"), "-D", self.data_dir], self.os_user, timeout=30,
                   env=child_env({"LC_ALL": "C", "LANG": "C"}, self.os_user))
        if proc.returncode != 0:
            raise PgCommandError(f"pg_controldata failed: {_tail(proc.stdout)}")
        out = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

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
                    _first_line(exc))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 5) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
