"""Patroni's etcd v3 key layout: the only place key strings exist."""

from __future__ import annotations

import re

DEFAULT_NAMESPACE = "/service/"

INITIALIZE = "initialize"
CONFIG = "config"
LEADER = "leader"
MEMBERS = "members/"
STATUS = "status"
HISTORY = "history"
FAILOVER = "failover"
SYNC = "sync"
FAILSAFE = "failsafe"
LEGACY_OPTIME = "optime/leader"


def cluster_prefix(namespace: str, scope: str) -> str:
    """`/<namespace>/<scope>/` with duplicate slashes folded, as Patroni builds it."""
    return re.sub("/+", "/", "/".join(["", namespace or DEFAULT_NAMESPACE, scope])) + "/"


def namespace_prefix(namespace: str) -> str:
    return re.sub("/+", "/", "/" + (namespace or DEFAULT_NAMESPACE) + "/")


def key(namespace: str, scope: str, name: str) -> str:
    return cluster_prefix(namespace, scope) + name


def member_key(namespace: str, scope: str, member: str) -> str:
    return cluster_prefix(namespace, scope) + MEMBERS + member


def prefix_range_end(prefix: bytes) -> bytes:
    """The etcd range_end that selects every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"
