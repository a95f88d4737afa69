"""What the HA brain asks the agent to do. Actions run in order; the first that fails ends the list."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    INITIALIZE = "initialize"  # race for the `initialize` key, then initdb, start, create users, take the lock
    CLONE = "clone"  # pg_basebackup from `target`
    START_PRIMARY = "start_primary"
    START_REPLICA = "start_replica"  # start as a standby following `target` (None: no upstream yet)
    ACQUIRE_LOCK = "acquire_lock"
    RENEW_LOCK = "renew_lock"
    RELEASE_LOCK = "release_lock"
    HAND_OVER = "hand_over"  # a crashed primary releases the lock for a replica and stays down for a while
    PROMOTE = "promote"
    DEMOTE = "demote"  # stop PostgreSQL at once: a primary that may no longer lead
    FOLLOW = "follow"  # point primary_conninfo at `target` (ha.standby.REMOTE: the standby_cluster host) and reload
    REWIND = "rewind"  # stop, pg_rewind from `target` (re-clone if that fails), start as its replica
    REINITIALIZE = "reinitialize"  # wipe the data directory and clone from `target`
    STEP_DOWN = "step_down"  # switchover: checkpoint, stop PostgreSQL cleanly, release the lock for `target`
    CLEAR_FAILOVER = "clear_failover"  # done with (or refusing) the failover key's request
    CREATE_SLOTS = "create_slots"  # leader: a physical slot for every other member
    UPDATE_STATUS = "update_status"  # leader: write /status (optime)
    DEMOTE_CLUSTER = "demote_cluster"  # standby cluster: a primary restarts as the standby leader, keeping the lock
    WRITE_SYNC = "write_sync"  # compare-and-set the `sync` key to `target` (Patroni's JSON)
    DELETE_SYNC = "delete_sync"  # synchronous mode was switched off: compare-and-delete the `sync` key
    SET_SYNC_NAMES = "set_sync_names"  # synchronous_standby_names = `target` and reload (None: the configured one)
    NOOP = "noop"


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str | None = None
    # CLEAR_FAILOVER: why the request is refused (the REST API reports it as the switchover's outcome); None
    # when it is cleared because it was carried out
    refusal: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}({self.target})" if self.target else str(self.kind)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    reason: str  # one line for the log: why these actions

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(a.kind for a in self.actions)


def act(kind: Kind, target: str | None = None, *, refusal: str | None = None) -> Action:
    return Action(kind, target, refusal)
