"""The agent's hands for synchronous replication: the `sync` key (compare-and-set) and synchronous_standby_names.

What to do, and in which order, is decided by ctl.ha.sync (pure); this module only carries out one step at a time:

- `write_sync`: CAS-write the `sync` key on the revision read this loop (a second write in the same loop uses the
  revision of the first). A lost race is logged and ends the loop's actions; the next loop re-reads.
- `delete_sync`: CAS-delete it (synchronous mode switched off).
- `set_names`: synchronous_standby_names in postgresql.hactl.conf, then a reload, then wait until the server uses the
  new value; record the primary's WAL position at that point (`sync_ready_lsn`): a standby is trusted with promotion
  only once it has flushed up to there; then write a little WAL, so that commits already waiting are released by
  the standbys now named without waiting for their next status interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ctl.agent import settings as st
from ctl.agent.node import NodeState, write_config
from ctl.config import Config
from ctl.dcs import keys
from ctl.errors import CtlError

log = logging.getLogger("hactl.agent")

_APPLY_TIMEOUT = 3.0  # seconds to wait for a reload to show; the postmaster takes milliseconds
_SETTLE = 0.2  # walsenders re-read the configuration just after the postmaster; give them this long


class SyncKeeper:
    def __init__(self, config: Config, node: NodeState, dcs: Any, pg: Any) -> None:
        self.config = config
        self.node = node
        self.dcs = dcs
        self.pg = pg
        self._read: Any = None  # the Cluster the revision below belongs to
        self._revision: int | None = None

    def _current_revision(self) -> int | None:
        c = self.node.cluster
        if self._read is c and c is not None:
            return self._revision
        return c.sync.mod_revision if c is not None and c.sync is not None else None

    def write_sync(self, value: str) -> bool:
        rev = self._current_revision()
        ok = self.dcs.put(keys.SYNC, value, create=True) if rev is None else self.dcs.put(keys.SYNC, value,
                                                                                            mod_revision=rev)
        if not ok:
            log.warning("Synchronous replication key updated by someone else: not writing %s", value)
            return False
        kv = self.dcs.get(keys.SYNC)
        self._read = self.node.cluster
        # someone else wrote after us: make the next CAS in this loop fail rather than overwrite them
        self._revision = kv.mod_revision if kv is not None and kv.value == value else -1
        log.info("sync key: %s", value)
        return True

    def delete_sync(self) -> bool:
        c = self.node.cluster
        if c is None or c.sync is None:
            return True
        if not self.dcs.delete(keys.SYNC, mod_revision=self._current_revision()):
            log.warning("Synchronous replication key updated by someone else: not deleting it")
            return False
        self._read, self._revision = c, None
        log.info("synchronous mode off: deleted the sync key")
        return True

    def set_names(self, value: str | None) -> bool:
        """synchronous_standby_names = value (None: the configured value), effective before this returns."""
        node, pg = self.node, self.pg
        node.sync_names = value
        node.sync_ready_lsn = None
        if not pg.is_running():
            return True  # written with the configuration when PostgreSQL starts
        state = node.pg_state
        standby = bool(state is not None and state.in_recovery)
        changed = write_config(self.config, node, pg, standby=standby, target=node.upstream if standby else None)
        wanted = value if value is not None else str(
            st.pg_parameters(self.config, node.good_config).get("synchronous_standby_names", ""))
        if changed:
            pg.reload()
        if not self._wait_for(wanted):
            log.warning("synchronous_standby_names = %r not in effect after %.0fs", wanted, _APPLY_TIMEOUT)
            return False
        if not standby:
            time.sleep(_SETTLE)
            rows = pg.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
            node.sync_ready_lsn = int(rows[0][0]) if rows else None
            # A standby replies only when WAL arrives (or every wal_receiver_status_interval): write a little, so
            # that the standbys now named reply and release the commits already waiting (Patroni does the same).
            pg.execute("DO $$BEGIN SET LOCAL synchronous_commit = 'off'; PERFORM pg_catalog.txid_current(); END$$")
        if value is None:
            log.info("synchronous mode off: synchronous_standby_names restored to the configured value %r", wanted)
        else:
            log.info("synchronous_standby_names = %r", wanted)
        return True

    def _wait_for(self, wanted: str) -> bool:
        deadline = time.monotonic() + _APPLY_TIMEOUT
        while True:
            try:
                rows = self.pg.execute("SELECT current_setting('synchronous_standby_names')")
                if rows and rows[0][0] == wanted:
                    return True
            except CtlError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
