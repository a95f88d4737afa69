"""Read-side use cases: fetch cluster snapshots, pick a member, ask members for their versions. No typer, no rich."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ctl.errors import NotFound, RestError, UsageError
from ctl.model import Cluster, Member, MemberRole, MemberVersion

ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any")


class ClusterSource(Protocol):
    """What the read side needs from a DCS client (ctl.dcs.gateway.EtcdGateway, or a fake in tests)."""

    def get_cluster(self, namespace: str, scope: str) -> Cluster: ...

    def list_clusters(self, namespace: str) -> list[str]: ...


class StatusSource(Protocol):
    def get_patroni(self, member: Member) -> dict[str, Any]: ...

    def map(self, fn: Any, members: Sequence[Member]) -> list[Any]: ...


def read_cluster(dcs: ClusterSource, namespace: str, scope: str) -> Cluster:
    """One snapshot of the cluster; an unknown cluster is an error that names the clusters that do exist.

    Raises:
        NotFound: there is no key under /<namespace>/<scope>/.
        DcsUnavailable, DcsError: from the DCS client.
    """
    cluster = dcs.get_cluster(namespace, scope)
    if cluster.is_empty:
        known = dcs.list_clusters(namespace)
        hint = f"; clusters in {namespace}: {', '.join(known)}" if known else f"; {namespace} holds no cluster"
        raise NotFound(f"cluster {scope!r} not found{hint}")
    return cluster


def cluster_names(requested: Sequence[str], scope: str | None) -> list[str]:
    """The clusters a command works on: those named, else the configured scope.

    Raises:
        UsageError: none named and no scope configured.
    """
    if requested:
        return list(dict.fromkeys(requested))
    if scope:
        return [scope]
    raise UsageError("no cluster name given and no 'scope' in the configuration")


def _matches(cluster: Cluster, member: Member, role: str) -> bool:
    is_leader = cluster.leader is not None and cluster.leader.name == member.name
    if role == "any":
        return True
    if role == "leader":
        return is_leader
    if role == "primary":
        return is_leader and member.role in (MemberRole.PRIMARY, MemberRole.MASTER)
    if role == "standby-leader":
        return is_leader and member.role == MemberRole.STANDBY_LEADER
    return not is_leader  # replica / standby


def select_member(cluster: Cluster, role: str | None = None, member: str | None = None) -> Member:
    """The member `dsn` prints: by name, else the first with the role (default: the leader).

    Raises:
        UsageError: both a role and a member, or an unknown role.
        NotFound: no such member.
    """
    if role and member:
        raise UsageError("--role and --member are mutually exclusive options")
    if member:
        found = cluster.member(member)
        if found is None:
            raise NotFound(f"member {member!r} is not in cluster {cluster.scope!r}")
        return found
    role = role or "leader"
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    for m in cluster.members:
        if _matches(cluster, m, role):
            return m
    raise NotFound(f"can not find a suitable member with role {role} in cluster {cluster.scope!r}")


def member_versions(cluster: Cluster, rest: StatusSource, names: Sequence[str] = ()) -> list[MemberVersion]:
    """`GET /patroni` on every selected member at once; a member that fails is reported, not fatal.

    Raises:
        NotFound: a named member is not in the cluster.
    """
    unknown = [n for n in names if cluster.member(n) is None]
    if unknown:
        raise NotFound(f"not a member of cluster {cluster.scope!r}: {', '.join(unknown)}")
    members = [m for m in cluster.members if m.api_url and (not names or m.name in names)]
    out = []
    for m, result in zip(members, rest.map(rest.get_patroni, members)):
        if isinstance(result, RestError):
            out.append(MemberVersion(member=m.name, error=str(result)))
            continue
        patroni = result.get("patroni") if isinstance(result.get("patroni"), dict) else {}
        server = result.get("server_version")
        out.append(MemberVersion(member=m.name, patroni_version=str(patroni.get("version")),
                                 server_version=server if isinstance(server, int) else None))
    return out
