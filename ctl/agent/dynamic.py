"""The `config` key as the agent follows it: adopt only valid revisions, and carry changes to PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

from ctl.agent.callbacks import role_of
from ctl.agent import settings as st
from ctl.agent.node import NodeState, write_config
from ctl.config import Config
from ctl.dynconfig import validate_dynamic_config
from ctl.errors import CtlError
from ctl.model import Cluster

log = logging.getLogger("hactl.agent")


class DynamicConfigWatch:
    def __init__(self, config: Config, node: NodeState, pg: Any) -> None:
        self.config = config
        self.node = node
        self.pg = pg
        self._checked_revision: int | None = None
        self._applied_revision: int | None = None
        self._applied_params: dict[str, Any] | None = None
        self._applied_hba: tuple[str, ...] | None = None

    def check(self, cluster: Cluster) -> None:
        """Adopt a new `config` key only when it is valid; a bad one is logged once and the last good one stays.

        The same validation as `PATCH /config` and `edit-config` (ctl.dynconfig), so a value written by another
        tool (Patroni's edit-config validates nothing) cannot make the agent misbehave or log on every loop.
        """
        cfg = cluster.config
        if cfg is None or cfg.mod_revision == self._checked_revision:
            return
        self._checked_revision = cfg.mod_revision
        found = validate_dynamic_config(cfg.data) if cfg.data else []
        # Keys the agent does not use are harmless (Patroni ignores them too, and other tools may add some);
        # bad values of the keys it does use, and unknown PostgreSQL parameters, are not.
        unused = [p for p in found if p.startswith("unknown key ")]
        problems = [p for p in found if p not in unused]
        if unused:
            log.warning("dynamic config (revision %s): ignoring %s", cfg.mod_revision, "; ".join(unused))
        if problems:
            log.error("ignoring invalid dynamic config (revision %s), keeping the last good one: %s",
                      cfg.mod_revision, "; ".join(problems))
            return
        self.node.good_config = cfg

    def apply(self) -> None:
        """A changed `config` key reaches PostgreSQL: rewrite the config files and reload.

        Reloadable parameters and pg_hba take effect at once; postmaster-context ones show as pending restart
        (PostgreSQL's own pg_settings.pending_restart, published in the member key with old -> new values).
        """
        node = self.node
        cluster, state, good = node.cluster, node.pg_state, node.good_config
        if cluster is None or good is None or state is None or not state.running:
            return
        revision = good.mod_revision
        if revision == self._applied_revision:
            return
        params = st.pg_parameters(self.config, good)
        hba = st.pg_hba(self.config, good)
        if self._applied_revision is None:  # first look after start: files were written at start
            self._applied_revision, self._applied_params, self._applied_hba = revision, params, hba
            return
        self._applied_revision = revision
        if params == self._applied_params and hba == self._applied_hba:
            return
        old = self._applied_params or {}
        changed = sorted(k for k in set(params) | set(old) if params.get(k) != old.get(k))
        try:
            standby = bool(state.in_recovery)
            write_config(self.config, node, self.pg, standby=standby, target=node.upstream if standby else None)
            self.pg.reload()
            node.hooks.reloaded(role_of(node))
            what = ", ".join(changed) if changed else "pg_hba"
            log.info("dynamic config changed (%s): configuration files rewritten, PostgreSQL reloaded", what)
            self._applied_params, self._applied_hba = params, hba
        except CtlError as exc:
            log.error("cannot apply the new dynamic config: %s", exc)
