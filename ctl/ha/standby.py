"""Standby cluster: the lock holder is a standby leader that replicates from a remote primary and never promotes.

Patroni's rules (ha.py `process_healthy_cluster`, `_get_node_to_follow`, `follow`; docs/standby_cluster.rst) as
pure functions. `decide()` calls them at a few dispatch points; everything else (races, switchover, cloning,
replicas following the leader) is the same as in a normal cluster.
"""

from __future__ import annotations

from ctl.ha.actions import Action, Decision, Kind, act
from ctl.ha.state import Observation

REMOTE = "(standby_cluster remote)"  # the FOLLOW/START_REPLICA target meaning the standby_cluster host:port


def active(obs: Observation) -> bool:
    """The dynamic config has a valid `standby_cluster` section (Patroni: a host, port or restore_command)."""
    c = obs.cluster
    return bool(c is not None and c.config is not None and c.config.is_standby_cluster)


def leader(obs: Observation) -> Decision:
    """This node holds the lock in a standby cluster and PostgreSQL runs."""
    keep = (act(Kind.RENEW_LOCK), act(Kind.UPDATE_STATUS), act(Kind.CREATE_SLOTS))
    if obs.is_primary:
        return Decision((act(Kind.RENEW_LOCK), act(Kind.DEMOTE_CLUSTER)),
                        "cannot be a real primary in a standby cluster: demoting to a standby leader")
    if obs.pg.stream_stalled and obs.pg.upstream == REMOTE and obs.settings.use_pg_rewind:
        # e.g. after demote-cluster: this node's timeline diverged from the remote's (Patroni rewinds here too)
        return Decision((*keep, act(Kind.REWIND, REMOTE)),
                        "standby leader not streaming from the remote primary: rewinding from it")
    if obs.pg.upstream != REMOTE:
        return Decision((*keep, act(Kind.FOLLOW, REMOTE)),
                        "promoted self to a standby leader because i had the session lock")
    return Decision(keep, f"no action: I am ({obs.name}), the standby leader with the lock")


def not_running_leader(obs: Observation) -> Decision:
    """The lock holder of a standby cluster has PostgreSQL stopped: start it following the remote."""
    return Decision((act(Kind.RENEW_LOCK), act(Kind.START_REPLICA, REMOTE)),
                    "postgres is not running while holding the standby leader lock: starting it as a standby leader")


def adapt(decision: Decision) -> Decision:
    """In a standby cluster a winner never promotes: it follows the remote instead (becomes the standby leader)."""
    if Kind.PROMOTE not in decision.kinds and Kind.START_PRIMARY not in decision.kinds:
        return decision
    actions: list[Action] = []
    for a in decision.actions:
        if a.kind == Kind.PROMOTE:
            actions.append(act(Kind.FOLLOW, REMOTE))
        elif a.kind == Kind.START_PRIMARY:
            actions.append(act(Kind.START_REPLICA, REMOTE))
        else:
            actions.append(a)
    return Decision(tuple(actions), decision.reason + " (standby cluster: following the remote primary, not promoting)")
