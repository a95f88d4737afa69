"""The CLI's etcd client: etcd's v3 JSON gRPC-gateway over the standard library only.

Why not python-etcd3: importing grpc + etcd3 costs 100-200 ms, and `hactl list` must start in well under 0.2 s.
Patroni talks to etcd the same way. This module builds the key-value requests (prefix reads, compare-and-set txns,
deletes) and parses the answers; ctl.dcs.gateway_transport sends them (endpoints in turn within one overall timeout,
TLS, auth) over the small keep-alive HTTP client in ctl.dcs.httpconn.
"""

from __future__ import annotations

import base64
from typing import Any

from ctl.config import EtcdSettings
from ctl.dcs import keys
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.dcs.gateway_transport import DEFAULT_TIMEOUT, GatewayTransport
from ctl.errors import CasFailed, DcsError
from ctl.model import Cluster


def b64(data: str | bytes) -> str:
    """etcd's gateway wants keys and values as base64 strings."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> str:
    if not text:
        return ""
    return base64.b64decode(text).decode("utf-8", errors="replace")


def parse_range_response(body: dict[str, Any]) -> tuple[list[KeyValue], int]:
    """A `kv/range` JSON response -> (key/values, header revision). Numbers arrive as strings (int64 in JSON)."""
    kvs = [
        KeyValue(
            key=unb64(kv.get("key")),
            value=unb64(kv.get("value")),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv["lease"]) if kv.get("lease") not in (None, "0", 0) else None,
            create_revision=int(kv.get("create_revision", 0)),
        )
        for kv in body.get("kvs") or ()
    ]
    return kvs, int((body.get("header") or {}).get("revision", 0))


class EtcdGateway:
    """A small etcd v3 client for the CLI: prefix reads, compare-and-set writes, deletes."""

    def __init__(self, settings: EtcdSettings, timeout: float = DEFAULT_TIMEOUT) -> None:
        """A client for `settings`' endpoints; nothing is sent yet.

        Raises:
            ConfigError: the timeout is out of range, or the TLS files cannot be loaded.
        """
        self._transport = GatewayTransport(settings, timeout)

    # ------------------------------------------------------------------------------------------------ public API

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._transport.urls

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` in one linearizable range read.

        Raises:
            DcsUnavailable: no endpoint answered within the timeout.
            DcsError: etcd refused the request (auth, permissions).
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw))})
        return parse_range_response(body)

    def get_cluster(self, namespace: str, scope: str) -> Cluster:
        """One consistent snapshot of `/<namespace>/<scope>/`.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        prefix = keys.cluster_prefix(namespace, scope)
        kvs, revision = self.get_prefix(prefix)
        return parse_cluster(scope, prefix, kvs, revision)

    def get_all_clusters(self, namespace: str) -> list[Cluster]:
        """Every cluster under the namespace, from ONE range read (`list --all`), sorted by scope.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        ns = keys.namespace_prefix(namespace)
        kvs, revision = self.get_prefix(ns)
        by_scope: dict[str, list[KeyValue]] = {}
        for kv in kvs:
            rest = kv.key[len(ns):]
            if "/" in rest:
                by_scope.setdefault(rest.split("/", 1)[0], []).append(kv)
        return [parse_cluster(scope, keys.cluster_prefix(namespace, scope), group, revision)
                for scope, group in sorted(by_scope.items())]

    def count_prefix(self, prefix: str) -> int:
        """How many keys are under `prefix` (nothing but the count is transferred).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "count_only": True})
        return int(body.get("count", 0))

    def first_keys(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` key names under `prefix` in key order (keys only).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = prefix.encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "keys_only": True, "limit": int(limit)})
        return [unb64(kv.get("key")) for kv in body.get("kvs") or ()]

    def delete_range(self, start: str, end: str) -> int:
        """Delete the keys in [start, end); returns how many were deleted.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        body = self._call("/kv/deleterange", {"key": b64(start), "range_end": b64(end)})
        return int(body.get("deleted", 0))

    def etcd_members(self) -> list[dict[str, Any]]:
        """etcd's own member list: [{"name", "clientURLs", "peerURLs"}].

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        body = self._call("/cluster/member/list", {})
        return [m for m in body.get("members") or () if isinstance(m, dict)]

    def endpoint_health(self, url: str, timeout: float = 2.0) -> tuple[bool, str | None]:
        """GET <url>/health on one etcd member: (healthy, why not)."""
        return self._transport.health(url, timeout)

    def list_clusters(self, namespace: str) -> list[str]:
        """Names of the clusters that have keys under the namespace (keys only; values are not transferred).

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        raw = keys.namespace_prefix(namespace).encode("utf-8")
        body = self._call("/kv/range", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw)),
                                        "keys_only": True})
        names = set()
        for kv in body.get("kvs") or ():
            rest = unb64(kv.get("key"))[len(raw.decode("utf-8")):]
            if "/" in rest:
                names.add(rest.split("/", 1)[0])
        return sorted(names)

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> int:
        """Write `key`; with `mod_revision` only if the key is unchanged, with `create` only if it is absent.

        Returns the new revision.

        Raises:
            CasFailed: the comparison failed (someone changed the key first).
            ResultUnknown: a compare-and-set was sent and its answer was lost (it is not sent twice).
            DcsUnavailable, DcsError: see get_prefix.
        """
        request = {"request_put": {"key": b64(key), "value": b64(value)}}
        compare = self._compare(key, mod_revision, create)
        if not compare:
            body = self._call("/kv/put", request["request_put"])
            return int((body.get("header") or {}).get("revision", 0))
        return self._txn(key, compare, request)

    def delete(self, key: str, *, mod_revision: int | None = None) -> int:
        """Delete `key`, only if unchanged when `mod_revision` is given. Returns the new revision.

        Raises:
            CasFailed, ResultUnknown, DcsUnavailable, DcsError: see put.
        """
        request = {"request_delete_range": {"key": b64(key)}}
        compare = self._compare(key, mod_revision, False)
        if not compare:
            body = self._call("/kv/deleterange", request["request_delete_range"])
            return int((body.get("header") or {}).get("revision", 0))
        return self._txn(key, compare, request)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted.

        Raises:
            DcsUnavailable, DcsError: see get_prefix.
        """
        if not prefix.strip("/"):
            raise DcsError("refusing to delete the whole keyspace")
        raw = prefix.encode("utf-8")
        body = self._call("/kv/deleterange", {"key": b64(raw), "range_end": b64(keys.prefix_range_end(raw))})
        return int(body.get("deleted", 0))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "EtcdGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ internals

    @staticmethod
    def _compare(key: str, mod_revision: int | None, create: bool) -> list[dict[str, Any]]:
        if create:
            return [{"key": b64(key), "target": "CREATE", "create_revision": "0", "result": "EQUAL"}]
        if mod_revision is not None:
            return [{"key": b64(key), "target": "MOD", "mod_revision": str(mod_revision), "result": "EQUAL"}]
        return []

    def _txn(self, key: str, compare: list[dict[str, Any]], request: dict[str, Any]) -> int:
        body = self._call("/kv/txn", {"compare": compare, "success": [request], "failure": []}, idempotent=False)
        if not body.get("succeeded"):  # the gateway omits false booleans
            raise CasFailed(f"{key} was changed by someone else since it was read")
        return int((body.get("header") or {}).get("revision", 0))

    def _call(self, path: str, payload: dict[str, Any], idempotent: bool = True) -> dict[str, Any]:
        """One request to etcd (see GatewayTransport.call).

        Raises:
            DcsUnavailable, ResultUnknown, DcsError: see GatewayTransport.call.
        """
        return self._transport.call(path, payload, idempotent)
