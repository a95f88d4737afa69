"""The unprivileged OS user PostgreSQL runs as.

PostgreSQL refuses to run as root. When hactl runs as root, every PostgreSQL program (postgres, initdb,
pg_basebackup, pg_rewind, pg_controldata) is started with the uid/gid/groups of an OS user (default `postgres`),
and every file hactl writes for PostgreSQL is chowned to it. When hactl is not root, it runs them as itself and
ignores the configured user.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass

from ctl.errors import PgCommandError

log = logging.getLogger(__name__)

DEFAULT_OS_USER = "postgres"


@dataclass(frozen=True)
class OsUser:
    """Who PostgreSQL programs run as. `switch` is False when we are already that user (not root)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    switch: bool


def is_root() -> bool:
    return os.geteuid() == 0


def _from_pwd(entry: pwd.struct_passwd, switch: bool) -> OsUser:
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, switch)


def resolve_os_user(name: str | None) -> OsUser:
    """The user to run PostgreSQL as: `name` (default postgres) when root, else the current user.

    Raises:
        PgCommandError: we are root and the user does not exist (see ensure_os_user), or the user is root.
    """
    if not is_root():
        me = pwd.getpwuid(os.geteuid())
        if name and name != me.pw_name:
            log.warning("not root: running PostgreSQL as %s, not as the configured OS user %s", me.pw_name, name)
        return _from_pwd(me, switch=False)
    name = name or DEFAULT_OS_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PgCommandError(
            f"OS user {name!r} does not exist; PostgreSQL cannot run as root "
            f"(create it: useradd --system --no-create-home --shell /usr/sbin/nologin {name})"
        ) from None
    if entry.pw_uid == 0:
        raise PgCommandError(f"OS user {name!r} has uid 0; PostgreSQL refuses to run as root")
    return _from_pwd(entry, switch=True)


def ensure_os_user(name: str = DEFAULT_OS_USER) -> OsUser:
    """Create the system user `name` if it is missing (root only) and return it.

    Raises:
        PgCommandError: the user is missing and cannot be created (not root, or useradd failed).
    """
    try:
        return resolve_os_user(name)
    except PgCommandError:
        if not is_root():
            raise
    if pwd_exists(name):  # exists but unusable (uid 0)
        return resolve_os_user(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    nologin = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    argv = [useradd, "--system", "--no-create-home", "--user-group", "--shell", nologin, name]
    if not os.path.exists(useradd):
        adduser = shutil.which("adduser")  # busybox/alpine
        if not adduser:
            raise PgCommandError(f"cannot create OS user {name!r}: neither useradd nor adduser found")
        argv = [adduser, "-S", "-D", "-H", "-s", nologin, name]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and not pwd_exists(name):
        raise PgCommandError(f"cannot create OS user {name!r}: {proc.stderr.strip() or proc.returncode}")
    log.info("created OS user %s for PostgreSQL", name)
    return resolve_os_user(name)


def pwd_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def chown(path: str, user: OsUser) -> None:
    """Give `path` to the OS user (no-op when we do not switch users)."""
    if user.switch:
        os.chown(path, user.uid, user.gid)


def chown_tree(path: str, user: OsUser) -> None:
    """chown -R, without following symlinks."""
    if not user.switch:
        return
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            os.chown(os.path.join(root, entry), user.uid, user.gid, follow_symlinks=False)


def check_reachable(path: str, user: OsUser) -> None:
    """Fail early, with a hint, when the OS user cannot traverse the directories above `path`.

    Raises:
        PgCommandError: an existing ancestor directory lacks the search (x) permission for the OS user.
    """
    if not user.switch:
        return
    current = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_uid == user.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in user.groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise PgCommandError(
                    f"OS user {user.name} cannot reach {path}: {current} has mode {stat.S_IMODE(st.st_mode):04o} "
                    f"(owner {_user_name(st.st_uid)}); make it traversable, e.g. chmod o+x {current}")
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
