"""ctl.pg: all PostgreSQL process control and probing for the agent.

Modules: binaries (find bin_dir), osuser (the unprivileged OS user), process (spawning with a parent-death
signal, PIDs), conf (pure rendering of config files, listen/initdb/slot-name parsing), probe (PgState and its
SQL), postgres (the Postgres class; its docstring describes the fencing design).
"""

from ctl.pg.binaries import find_bin_dir
from ctl.pg.osuser import ensure_os_user
from ctl.pg.postgres import PgState, Postgres

__all__ = ["Postgres", "PgState", "find_bin_dir", "ensure_os_user"]
