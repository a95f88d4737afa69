"""patroni.yml + PATRONI_* environment -> frozen settings.

Both the CLI and the agent read the same file. ctl.config_sources reads and merges the sources (file, environment,
--dcs-url); this module checks the types and builds the frozen settings. Secrets are kept out of repr() so that a
settings object can be logged safely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ctl.config_sources import DEFAULT_ETCD_PORT, gather, parse_list
from ctl.dcs.keys import DEFAULT_NAMESPACE
from ctl.errors import ConfigError


@dataclass(frozen=True)
class EtcdSettings:
    hosts: tuple[tuple[str, int], ...]
    protocol: str = "http"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(f"{self.protocol}://[{h}]:{p}" if ":" in h else f"{self.protocol}://{h}:{p}" for h, p in self.hosts)


@dataclass(frozen=True)
class RestApiSettings:
    listen: str | None = None
    connect_address: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    verify_client: str | None = None
    allowlist: tuple[str, ...] = ()
    allowlist_include_members: bool = False

    @property
    def protocol(self) -> str:
        return "https" if self.certfile else "http"


@dataclass(frozen=True)
class CtlSettings:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PgUser:
    username: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PostgresqlSettings:
    listen: str | None = None
    connect_address: str | None = None
    data_dir: str | None = None
    bin_dir: str | None = None
    superuser: PgUser = PgUser("postgres")
    replication: PgUser = PgUser("replicator")
    rewind: PgUser | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    pg_hba: tuple[str, ...] = ()
    use_pg_rewind: bool = False
    use_slots: bool = True
    pgpass: str | None = None


@dataclass(frozen=True)
class Config:
    scope: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    name: str | None = None
    etcd: EtcdSettings | None = None
    restapi: RestApiSettings = RestApiSettings()
    ctl: CtlSettings = CtlSettings()
    postgresql: PostgresqlSettings = PostgresqlSettings()
    bootstrap: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    log: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------------------------- typed access


class _Reader:
    """Typed getters that name the offending key in their error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.origin}: '{path}' must be {expected}, got {type(value).__name__} {value!r}"
                           if not _secret(path) else f"{self.origin}: '{path}' must be {expected}")

    def section(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, "a mapping", value)
        return value

    def str_(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        value = data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise self.fail(path, "a string", value)
        return str(value)

    def bool_(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "on", "yes", "1", "false", "off", "no", "0"):
            return value.strip().lower() in ("true", "on", "yes", "1")
        if isinstance(value, int):
            return bool(value)
        raise self.fail(path, "a boolean", value)

    def list_(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(parse_list(value))
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return tuple(str(v) for v in value)
        raise self.fail(path, "a list of strings", value)


def _secret(path: str) -> bool:
    return "password" in path.lower()


def _split_hostport(text: str, origin: str, path: str) -> tuple[str, int]:
    text = text.strip()
    if "://" in text:
        parts = urlsplit(text)
        if not parts.hostname:
            raise ConfigError(f"{origin}: '{path}': cannot parse host from {text!r}")
        try:
            return parts.hostname, parts.port or DEFAULT_ETCD_PORT
        except ValueError:
            raise ConfigError(f"{origin}: '{path}': bad port in {text!r}") from None
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return host, int(port) if port else DEFAULT_ETCD_PORT
    except ValueError:
        raise ConfigError(f"{origin}: '{path}': bad port in {text!r}") from None


def _etcd(raw: Mapping[str, Any], r: _Reader) -> EtcdSettings | None:
    for section in ("etcd3", "etcd"):
        if section not in raw or raw[section] is None:
            continue
        data = r.section(raw, section, section)
        protocol = r.str_(data, "protocol", f"{section}.protocol")
        hosts: list[tuple[str, int]] = []
        for h in r.list_(data, "hosts", f"{section}.hosts"):
            hosts.append(_split_hostport(h, r.origin, f"{section}.hosts"))
        if not hosts and data.get("host") is not None:
            hosts.append(_split_hostport(r.str_(data, "host", f"{section}.host") or "", r.origin, f"{section}.host"))
        if not hosts and data.get("url") is not None:
            url = r.str_(data, "url", f"{section}.url") or ""
            hosts.append(_split_hostport(url, r.origin, f"{section}.url"))
            if "://" in url and not protocol:
                protocol = urlsplit(url).scheme
        if not hosts and data.get("proxy") is not None:
            url = r.str_(data, "proxy", f"{section}.proxy") or ""
            hosts.append(_split_hostport(url, r.origin, f"{section}.proxy"))
            if "://" in url and not protocol:
                protocol = urlsplit(url).scheme
        if not hosts:
            raise ConfigError(f"{r.origin}: '{section}' has no host, hosts or url")
        cacert = r.str_(data, "cacert", f"{section}.cacert")
        cert = r.str_(data, "cert", f"{section}.cert")
        protocol = (protocol or ("https" if cacert or cert else "http")).lower()
        if protocol not in ("http", "https"):
            raise ConfigError(f"{r.origin}: '{section}.protocol' must be http or https, got {protocol!r}")
        return EtcdSettings(
            hosts=tuple(hosts),
            protocol=protocol,
            username=r.str_(data, "username", f"{section}.username") or r.str_(data, "user", f"{section}.user"),
            password=r.str_(data, "password", f"{section}.password"),
            cacert=cacert,
            cert=cert,
            key=r.str_(data, "key", f"{section}.key"),
        )
    return None


def _auth(data: Mapping[str, Any], r: _Reader, path: str) -> tuple[str | None, str | None]:
    auth = r.section(data, "authentication", f"{path}.authentication")
    return r.str_(auth, "username", f"{path}.authentication.username"), r.str_(
        auth, "password", f"{path}.authentication.password"
    )


def _pg_user(auth: Mapping[str, Any], role: str, r: _Reader, default: str | None) -> PgUser | None:
    data = r.section(auth, role, f"postgresql.authentication.{role}")
    username = r.str_(data, "username", f"postgresql.authentication.{role}.username", default)
    if username is None:
        return None
    return PgUser(username, r.str_(data, "password", f"postgresql.authentication.{role}.password"))


def build(raw: Mapping[str, Any], origin: str = "configuration") -> Config:
    """Validate the raw mapping and build frozen settings.

    Raises:
        ConfigError: a known key has the wrong type.
    """
    r = _Reader(origin)
    rest = r.section(raw, "restapi", "restapi")
    ctl = r.section(raw, "ctl", "ctl")
    pg = r.section(raw, "postgresql", "postgresql")
    rest_user, rest_pwd = _auth(rest, r, "restapi")
    ctl_user, ctl_pwd = _auth(ctl, r, "ctl")
    pg_auth = r.section(pg, "authentication", "postgresql.authentication")
    params = r.section(pg, "parameters", "postgresql.parameters")
    return Config(
        scope=r.str_(raw, "scope", "scope"),
        namespace=r.str_(raw, "namespace", "namespace", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
        name=r.str_(raw, "name", "name"),
        etcd=_etcd(raw, r),
        restapi=RestApiSettings(
            listen=r.str_(rest, "listen", "restapi.listen"),
            connect_address=r.str_(rest, "connect_address", "restapi.connect_address"),
            username=rest_user,
            password=rest_pwd,
            certfile=r.str_(rest, "certfile", "restapi.certfile"),
            keyfile=r.str_(rest, "keyfile", "restapi.keyfile"),
            keyfile_password=r.str_(rest, "keyfile_password", "restapi.keyfile_password"),
            cafile=r.str_(rest, "cafile", "restapi.cafile"),
            verify_client=r.str_(rest, "verify_client", "restapi.verify_client"),
            allowlist=r.list_(rest, "allowlist", "restapi.allowlist"),
            allowlist_include_members=r.bool_(rest, "allowlist_include_members", "restapi.allowlist_include_members",
                                              False),
        ),
        ctl=CtlSettings(
            username=ctl_user,
            password=ctl_pwd,
            insecure=r.bool_(ctl, "insecure", "ctl.insecure", False),
            cacert=r.str_(ctl, "cacert", "ctl.cacert"),
            certfile=r.str_(ctl, "certfile", "ctl.certfile"),
            keyfile=r.str_(ctl, "keyfile", "ctl.keyfile"),
            keyfile_password=r.str_(ctl, "keyfile_password", "ctl.keyfile_password"),
        ),
        postgresql=PostgresqlSettings(
            listen=r.str_(pg, "listen", "postgresql.listen"),
            connect_address=r.str_(pg, "connect_address", "postgresql.connect_address"),
            data_dir=r.str_(pg, "data_dir", "postgresql.data_dir"),
            bin_dir=r.str_(pg, "bin_dir", "postgresql.bin_dir"),
            superuser=_pg_user(pg_auth, "superuser", r, "postgres") or PgUser("postgres"),
            replication=_pg_user(pg_auth, "replication", r, "replicator") or PgUser("replicator"),
            rewind=_pg_user(pg_auth, "rewind", r, None),
            parameters=dict(params),
            pg_hba=r.list_(pg, "pg_hba", "postgresql.pg_hba"),
            use_pg_rewind=r.bool_(pg, "use_pg_rewind", "postgresql.use_pg_rewind", False),
            use_slots=r.bool_(pg, "use_slots", "postgresql.use_slots", True),
            pgpass=r.str_(pg, "pgpass", "postgresql.pgpass"),
        ),
        bootstrap=dict(r.section(raw, "bootstrap", "bootstrap")),
        tags=dict(r.section(raw, "tags", "tags")),
        log=dict(r.section(raw, "log", "log")),
        source=origin,
        raw=dict(raw),
    )


def load(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    dcs_url: str | None = None,
    require_file: bool = False,
) -> Config:
    """Load patroni.yml (or PATRONI_CONFIGURATION), apply PATRONI_* overrides and --dcs-url.

    `path=None` means the default patronictl path, which may be missing.

    Raises:
        ConfigError: the file is missing/unreadable/malformed, or a key has a wrong type.
    """
    return build(*gather(path, os.environ if env is None else env, dcs_url, require_file))
