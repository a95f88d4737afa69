"""What every operation returns: an OperationResult (asked, outcome, timings, final roles, per-member outcomes).

The outcome decides the exit code (OUTCOME_CODES); `-f json` prints `as_dict()`. No I/O here except `fresh`, the
re-read after an operation, which swallows etcd errors (the caller reports "unknown").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ctl.errors import CtlError, ExitCode
from ctl.model import Cluster

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    return None


OUTCOME_CODES = {
    "succeeded": ExitCode.OK,
    "scheduled": ExitCode.OK,
    "accepted": ExitCode.OK,
    "nothing to do": ExitCode.OK,
    "refused": ExitCode.REFUSED,
    "failed": ExitCode.FAILED,
    "timeout": ExitCode.TIMEOUT,
    "unknown": ExitCode.UNKNOWN,
    "unreachable": ExitCode.REST_UNAVAILABLE,
}


@dataclass
class MemberOutcome:
    """What one member answered to a per-member request (restart, reload, reinit, flush)."""

    member: str
    outcome: str
    message: str
    status: int | None = None
    seconds: float | None = None


@dataclass
class OperationResult:
    """What was asked, what happened, how long it took and the roles afterwards; `-f json` prints it as is."""

    command: str
    requested: dict[str, Any]
    outcome: str = "unknown"
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    final_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    members: list[MemberOutcome] = field(default_factory=list)
    cluster: Cluster | None = field(default=None, repr=False)  # a fresh read after the outcome, for the table

    @property
    def exit_code(self) -> ExitCode:
        return OUTCOME_CODES.get(self.outcome, ExitCode.UNKNOWN)

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "requested": self.requested, "outcome": self.outcome,
                               "ok": self.ok, "exit_code": int(self.exit_code), "message": self.message,
                               "timings": {k: round(v, 3) for k, v in self.timings.items()},
                               "final_roles": self.final_roles}
        if self.notes:
            out["notes"] = self.notes
        if self.members:
            out["members"] = [{k: v for k, v in vars(m).items() if v is not None} for m in self.members]
        return out


def roles_of(cluster: Cluster | None) -> dict[str, dict[str, Any]]:
    """{member: {role, state, timeline, lag}} as `list` derives them, for the JSON result."""
    if cluster is None:
        return {}
    out = {}
    optime = cluster.optime
    for m in cluster.members:
        role = cluster.cluster_role(m).value
        entry: dict[str, Any] = {"role": role, "state": (m.replication_state if role not in
                                                         ("leader", "standby_leader") else None) or m.state}
        if m.timeline is not None:
            entry["timeline"] = m.timeline
        if role not in ("leader", "standby_leader") and optime is not None and m.lsn is not None:
            entry["lag_bytes"] = max(optime - m.lsn, 0)
        out[m.name] = entry
    return out



class Dcs(Protocol):
    """What the operations need from a DCS client (ctl.dcs.gateway.EtcdGateway, or a fake in tests)."""

    def get_cluster(self, namespace: str, scope: str) -> Cluster: ...

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> int: ...



def fresh(dcs: Dcs, namespace: str, scope: str) -> Cluster | None:
    try:
        return dcs.get_cluster(namespace, scope)
    except CtlError:
        return None

