"""One data directory and the offline tools that work on it: initdb, pg_basebackup, pg_rewind, pg_controldata,
single-user crash recovery, and the files hactl writes there.

DataDir never looks at the running server; `Postgres` checks that first and holds its lock around these calls.
Every program runs as the OS user (ctl.pg.process). Passwords reach programs only through 0600 files in a
private temporary directory (initdb --pwfile, PGPASSFILE), never through argv or the environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from ctl.config import PgUser
from ctl.errors import PgCommandError
from ctl.pg import conf
from ctl.pg.binaries import binary
from ctl.pg.osuser import OsUser, check_reachable, chown
from ctl.pg.process import child_env, output_tail, run

log = logging.getLogger(__name__)

CLEAN_STATES = ("shut down", "shut down in recovery")
# pg_rewind copies the source's configuration files; these are ours and are put back afterwards.
CONFIG_FILES = ("postgresql.conf", conf.HACTL_CONF, "pg_hba.conf", "pg_ident.conf")


class DataDir:
    """The files under `path` and the programs that need the server stopped."""

    def __init__(self, path: str, bin_dir: str, user: OsUser) -> None:
        self.path = path
        self.bin_dir = bin_dir
        self.user = user

    # ------------------------------------------------------------------------------------------ files

    def empty(self) -> bool:
        try:
            return not os.listdir(self.path)
        except FileNotFoundError:
            return True

    def has_cluster(self) -> bool:
        return os.path.exists(os.path.join(self.path, "PG_VERSION"))

    def prepare(self) -> None:
        """Create the (empty) directory with mode 0700, owned by the OS user.

        Raises:
            PgCommandError: the OS user cannot traverse the parent directories.
        """
        check_reachable(self.path, self.user)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        chown(self.path, self.user)
        os.chmod(self.path, 0o700)

    def clear(self) -> None:
        """Empty the directory but keep it (after a failed initdb/basebackup)."""
        for entry in os.listdir(self.path) if os.path.isdir(self.path) else ():
            path = os.path.join(self.path, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.path, name), encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, name: str, text: str) -> None:
        """Atomically replace a file: mode 0600, owned by the OS user."""
        path = os.path.join(self.path, name)
        tmp = f"{path}.hactl-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        chown(tmp, self.user)
        os.replace(tmp, path)

    def update(self, name: str, text: str) -> bool:
        """write() unless the file already holds `text`; True when it was written."""
        if self.read(name) == text:
            return False
        self.write(name, text)
        return True

    def unlink(self, name: str) -> bool:
        """Remove a file; True when it existed."""
        try:
            os.unlink(os.path.join(self.path, name))
            return True
        except FileNotFoundError:
            return False

    @contextmanager
    def _private_file(self, name: str, content: str | None) -> Iterator[str | None]:
        """A 0600 file only the OS user can read, in a fresh 0700 temp dir, removed afterwards (None: no file)."""
        if content is None:
            yield None
            return
        tmpdir = tempfile.mkdtemp(prefix="hactl-")
        try:
            chown(tmpdir, self.user)
            path = os.path.join(tmpdir, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
            chown(path, self.user)
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
            yield conninfo, child_env(extra, self.user)

    # ------------------------------------------------------------------------------------------ programs

    def initdb(self, args: Sequence[str], superuser: PgUser, timeout: float) -> None:
        """initdb into the empty directory; the superuser gets its password through --pwfile.

        Raises:
            PgCommandError: not empty, or initdb failed (the directory is emptied again).
        """
        if not self.empty():
            raise PgCommandError(f"cannot initdb: data directory {self.path} is not empty")
        self.prepare()
        content = superuser.password + "\n" if superuser.password else None
        with self._private_file("pwfile", content) as pwfile:
            argv = [binary(self.bin_dir, "initdb"), "-D", self.path, f"--username={superuser.username}", *args]
            if pwfile:
                argv.append(f"--pwfile={pwfile}")
            proc = run(argv, self.user, timeout=timeout, env=child_env({"LC_MESSAGES": "C"}, self.user))
        if proc.returncode != 0:
            self.clear()
            raise PgCommandError(f"initdb failed (exit {proc.returncode}): {output_tail(proc.stdout)}")

    def basebackup(self, source_conninfo: str | Mapping[str, Any], slot: str | None, timeout: float | None,
                   *, options: Sequence[str] = (), on_output: Callable[[str], None] | None = None) -> None:
        """pg_basebackup -X stream -c fast --progress into the empty directory; `options` (long form,
        `--name=value`) replace the defaults they name; `on_output` sees each output line as it comes.

        Raises:
            ConfigError: malformed conninfo.  PgCommandError: not empty, failed or timed out (then emptied).
        """
        if not self.empty():
            raise PgCommandError(f"cannot clone: data directory {self.path} is not empty")
        self.prepare()
        with self._source_env(source_conninfo) as (conninfo, env):
            named = {o.split("=", 1)[0] for o in options}
            argv = [binary(self.bin_dir, "pg_basebackup"), "-D", self.path, "-w", "--progress", "-d", conninfo]
            if "--wal-method" not in named:
                argv += ["-X", "stream"]
            if "--checkpoint" not in named:
                argv += ["-c", "fast"]
            argv += list(options)
            if slot:
                argv += ["-S", conf.slot_name(slot)]
            try:
                proc = run(argv, self.user, timeout=timeout, env=env, on_output=on_output)
            except PgCommandError:
                self.clear()
                raise
        if proc.returncode != 0:
            self.clear()
            raise PgCommandError(f"pg_basebackup failed (exit {proc.returncode}): {output_tail(proc.stdout)}")

    def rewind(self, source_conninfo: str | Mapping[str, Any], timeout: float) -> bool:
        """pg_rewind onto the source; our config files are kept and standby.signal is left in place.

        Raises:
            ConfigError: malformed conninfo.  PgCommandError: pg_rewind could not run or timed out.
        """
        saved = {name: text for name in CONFIG_FILES if (text := self.read(name)) is not None}
        try:
            with self._source_env(source_conninfo) as (conninfo, env):
                argv = [binary(self.bin_dir, "pg_rewind"), "-D", self.path, f"--source-server={conninfo}",
                        "--no-ensure-shutdown"]  # ensure_clean_shutdown() ran first, without standby.signal
                proc = run(argv, self.user, timeout=timeout, env=env)
        finally:
            for name, text in saved.items():
                self.write(name, text)
            self.write("standby.signal", "")  # whatever happened, never come back as a primary by accident
        if proc.returncode != 0:
            log.error("pg_rewind failed (exit %s): %s", proc.returncode, output_tail(proc.stdout))
            return False
        log.info("pg_rewind done: %s", output_tail(proc.stdout, 2))
        return True

    def ensure_clean_shutdown(self) -> bool:
        """Crash recovery in single-user mode when the control file says the server did not shut down cleanly
        (pg_rewind needs a clean shutdown). False when that did not help.

        Raises:
            PgCommandError: pg_controldata or postgres could not run.
        """
        state = self.controldata().get("Database cluster state", "")
        if state in CLEAN_STATES:
            return True
        log.info("data directory state is %r: crash recovery in single-user mode first", state)
        for name in ("standby.signal", "recovery.signal"):  # single-user mode refuses standby mode
            self.unlink(name)
        argv = [binary(self.bin_dir, "postgres"), "--single", "-F", "-D", self.path, "-c", "archive_mode=off",
                "template1"]
        try:
            proc = run(argv, self.user, timeout=600, stdin_data="")
        finally:
            self.write("standby.signal", "")  # this node is about to be rewound: never let it start as a primary
        state = self.controldata().get("Database cluster state", "")
        if state not in CLEAN_STATES:
            log.error("single-user crash recovery left state %r: %s", state, output_tail(proc.stdout))
            return False
        return True

    def controldata(self) -> dict[str, str]:
        """pg_controldata as a dict ("Database cluster state", "Latest checkpoint's TimeLineID", ...).

        Raises:
            PgCommandError: pg_controldata failed (e.g. no data directory).
        """
        proc = run([binary(self.bin_dir, "pg_controldata"), "-D", self.path], self.user, timeout=30,
                   env=child_env({"LC_ALL": "C", "LANG": "C"}, self.user))
        if proc.returncode != 0:
            raise PgCommandError(f"pg_controldata failed: {output_tail(proc.stdout)}")
        out = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out
