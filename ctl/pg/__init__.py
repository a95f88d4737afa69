"""ctl.pg: all PostgreSQL process control and probing for the agent.

Modules: postgres (the Postgres facade the agent uses), postmaster (the fenced postmaster process; its docstring
describes the fencing design), fence (the process that stops the postmaster when the agent dies, unless disarmed
in pause; PIDs), process (spawning as the OS user with a parent-death signal), datadir
(initdb, pg_basebackup, pg_rewind, pg_controldata, files), admin (roles, slots), conf (pure rendering of config
files; listen, initdb option and slot name parsing), probe (PgState and its SQL), osuser (the unprivileged OS
user), binaries (finding bin_dir).
"""

from ctl.pg.binaries import find_bin_dir
from ctl.pg.osuser import ensure_os_user
from ctl.pg.postgres import PgState, Postgres

__all__ = ["Postgres", "PgState", "find_bin_dir", "ensure_os_user"]
