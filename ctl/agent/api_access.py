"""Access control for the REST API's unsafe requests, in Patroni's order: allowlist, client certificate, Basic auth."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import socket
from typing import Callable, Iterable
from urllib.parse import urlsplit

from ctl.agent.api_types import Request, Response
from ctl.config import RestApiSettings
from ctl.errors import CtlError
from ctl.model import Cluster

log = logging.getLogger("ctl.agent.api")

_REALM = 'Basic realm="Patroni"'
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _resolve(host: str) -> list[Network]:
    try:
        infos = socket.getaddrinfo(host, 8080, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        log.error("cannot resolve %s: %s", host, exc)
        return []
    return [ipaddress.ip_network(sa[0], strict=False) for *_, sa in infos]


def build_allowlist(entries: Iterable[str]) -> tuple[Network, ...]:
    nets = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if "/" in entry:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                log.error("invalid value %r in restapi.allowlist: %s", entry, exc)
        else:
            nets.extend(_resolve(entry))
    return tuple(nets)


class AccessControl:
    """`check(request)`: None when an unsafe request may proceed, else the 403/401 response."""

    def __init__(self, settings: RestApiSettings, read_cluster: Callable[[], Cluster | None]) -> None:
        self.settings = settings
        self.read_cluster = read_cluster
        self.allowlist = build_allowlist(settings.allowlist)
        self.auth_key: bytes | None = None
        if settings.username is not None and settings.password is not None:
            self.auth_key = base64.b64encode(f"{settings.username}:{settings.password}".encode("utf-8"))
        self.verify_client = (settings.verify_client or "").lower() or None

    def check(self, request: Request) -> Response | None:
        allowlist = self.allowlist
        if self.settings.allowlist_include_members:
            allowlist = allowlist + self._member_networks()
        if self.allowlist or self.settings.allowlist_include_members:
            try:
                ip = ipaddress.ip_address(request.client_address[0].split("%")[0])
            except ValueError:
                return Response(403, "Access is denied")
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
            if not any(ip in net for net in allowlist):
                return Response(403, "Access is denied")
        if self.settings.certfile and self.verify_client in ("required", "optional") and not request.peer_cert:
            return Response(403, "client certificate required")
        if self.auth_key is not None:
            header = request.headers.get("Authorization")
            if header is None:
                return Response(401, "no auth header received", headers={"WWW-Authenticate": _REALM})
            if not header.startswith("Basic ") or not hmac.compare_digest(self.auth_key, header[6:].encode("utf-8")):
                return Response(401, "not authenticated", headers={"WWW-Authenticate": _REALM})
        return None

    def _member_networks(self) -> tuple[Network, ...]:
        try:
            cluster = self.read_cluster()
        except CtlError as exc:
            log.debug("allowlist_include_members: cannot read the cluster: %s", exc)
            return ()
        nets = []
        for m in cluster.members if cluster else ():
            if m.api_url:
                host = urlsplit(m.api_url).hostname
                if host:
                    nets.extend(_resolve(host))
        return tuple(nets)
