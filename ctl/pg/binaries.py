"""Locate the PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind, pg_controldata).

Search order: the configured `postgresql.bin_dir`, then the newest `/usr/lib/postgresql/<major>/bin` (Debian/Ubuntu
layout), then the directory of `pg_ctl` on PATH.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from ctl.errors import PgCommandError

INSTALL_HINT = "Debian: apt-get install postgresql-15"
# The binaries hactl runs; a directory counts as a bin_dir when it has all of them.
REQUIRED = ("postgres", "initdb", "pg_controldata", "pg_basebackup", "pg_rewind")
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"


def _has_binaries(path: str) -> bool:
    return all(os.access(os.path.join(path, b), os.X_OK) for b in REQUIRED)


def _major_of(path: str) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,); unparsable versions sort first."""
    version = os.path.basename(os.path.dirname(path.rstrip("/")))
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (-1,)


def find_bin_dir(configured: str | None) -> str:
    """The directory holding the PostgreSQL binaries.

    Raises:
        PgCommandError: nothing usable was found; the message says what to install.
    """
    if configured:
        path = os.path.expanduser(configured)
        if _has_binaries(path):
            return path
        missing = [b for b in REQUIRED if not os.access(os.path.join(path, b), os.X_OK)]
        raise PgCommandError(
            f"postgresql.bin_dir {configured} lacks {', '.join(missing)}; install PostgreSQL ({INSTALL_HINT})"
        )
    for path in sorted(glob.glob(DEBIAN_GLOB), key=_major_of, reverse=True):
        if _has_binaries(path):
            return path
    pg_ctl = shutil.which("pg_ctl") or shutil.which("postgres")
    if pg_ctl:
        path = os.path.dirname(os.path.realpath(pg_ctl))
        if _has_binaries(path):
            return path
    raise PgCommandError(
        f"PostgreSQL server binaries not found (looked in {DEBIAN_GLOB} and PATH); "
        f"install them ({INSTALL_HINT}) or set postgresql.bin_dir"
    )


def binary(bin_dir: str, name: str) -> str:
    """Full path of one PostgreSQL program in `bin_dir`."""
    return os.path.join(bin_dir, name)
