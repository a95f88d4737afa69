"""A synchronous standby hands its role over before its PostgreSQL stops or restarts (Patroni's
`Ha.while_not_sync_standby`). Pure: the agent (ctl/agent/handoff.py) publishes the tags and polls the DCS.

In synchronous mode a replica about to stop PostgreSQL (graceful agent stop, `POST /restart`) first publishes
`nosync: true, sync_priority: 0` in its member key, so that the leader drops it: the `sync` key first, then
`synchronous_standby_names`, with another standby picked in its place. Only then does it stop PostgreSQL, so commits
do not wait for a standby that is going away, and in strict mode the cluster keeps a promotable standby.
"""

from __future__ import annotations

from typing import Any, Mapping

from ctl.model import Cluster, Member, tags_nosync

HANDOFF_TAGS: Mapping[str, Any] = {"nosync": True, "sync_priority": 0}


def effective_tags(configured: Mapping[str, Any], handing_off: bool) -> dict[str, Any]:
    """The tags the member key and `GET /patroni` show: the configured ones, plus nosync during a hand-off."""
    tags = dict(configured)
    if handing_off:
        tags.update(HANDOFF_TAGS)
    return tags


def needed(mode: str, configured: Mapping[str, Any], is_leader: bool) -> bool:
    """Whether a stop or restart of this node's PostgreSQL hands off first (Patroni: synchronous mode on or quorum,
    not the leader, not tagged nosync)."""
    return mode in ("on", "quorum") and not is_leader and not tags_nosync(configured)


def listed(cluster: Cluster, name: str) -> bool:
    """The `sync` key of the current leader lists this member (Patroni's `is_sync_standby`)."""
    return name in cluster.sync_standbys


def replacements(cluster: Cluster, name: str, strict: bool) -> list[str]:
    """Members that look able to take our place as synchronous standby, from their member keys: running,
    streaming replicas, not nosync (nor nofailover in strict mode), not the leader, not us."""
    leader = cluster.leader.name if cluster.leader is not None else None
    return sorted(m.name for m in cluster.members if m.name not in (name, leader) and _could_be_sync(m, strict))


def _could_be_sync(m: Member, strict: bool) -> bool:
    if m.state != "running" or m.role not in ("replica", "sync_standby", "quorum_standby"):
        return False
    if m.replication_state != "streaming" or m.nosync:
        return False
    return not (strict and m.nofailover)


def waiting_for(cluster: Cluster, name: str, *, mode: str, strict: bool, was_listed: bool,
                released_for: float, replacement_grace: float) -> str | None:
    """What the hand-off still waits for before PostgreSQL may stop, or None to go ahead.

    - While the `sync` key lists us: for the leader to drop us, unless in strict mode (mode on) nobody can replace
      us (then the leader keeps us listed and commits wait in any case, so waiting would only delay the stop).
    - Once the key no longer lists us, in mode `on`: for the key to list a replacement when one looks available,
      at most `replacement_grace` seconds (`released_for`: how long we have been out of the key). The leader drops
      us from the key first and adds the new standby once PostgreSQL confirms it; stopping in between would leave
      the key listing nobody, and with it no promotable replica, for the length of our stop. Patroni stops at once.
    """
    others = replacements(cluster, name, strict)
    if listed(cluster, name):
        if mode == "on" and strict and not others:
            return None
        return "the leader to release us from the sync key"
    if mode == "on" and was_listed and others and not (cluster.sync_standbys - {name}) \
            and released_for < replacement_grace:
        return f"the sync key to list another standby ({', '.join(others)})"
    return None


def leader_wakes(cluster: Cluster | None, me: str, member: Member) -> bool:
    """The leader's loop wakes at once when a member its `sync` key lists turns nosync or stops running (a
    hand-off), instead of noticing on its next loop_wait tick."""
    if cluster is None or cluster.leader is None or cluster.leader.name != me:
        return False
    if member.name not in cluster.sync_standbys:
        return False
    return member.nosync or member.state != "running"
