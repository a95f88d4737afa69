"""Agent-side view of the configuration: validation at start, effective HA settings and PostgreSQL parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ctl.config import Config
from ctl.dynconfig import AGENT_DEFAULT_PARAMETERS
from ctl.errors import ConfigError
from ctl.ha.state import HaSettings
from ctl.model import DynamicConfig, _truthy, tags_failover_priority, tags_nofailover

DEFAULT_PARAMETERS = AGENT_DEFAULT_PARAMETERS
ROLE_OPTIONS = frozenset({"superuser", "nosuperuser", "createdb", "nocreatedb", "createrole", "nocreaterole",
                          "inherit", "noinherit", "login", "nologin", "replication", "noreplication",
                          "bypassrls", "nobypassrls"})
DEFAULT_HBA = (
    "local all all trust",
    "host all all 127.0.0.1/32 md5",
    "host all all ::1/128 md5",
    "host replication all 127.0.0.1/32 md5",
    "host replication all ::1/128 md5",
)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int


def split_address(value: str | None, default_port: int, what: str) -> HostPort:
    """`host:port` (or `*:port`, or `host`) -> HostPort.

    Raises:
        ConfigError: a port that is not a number.
    """
    if not value:
        raise ConfigError(f"{what} is required")
    text = value.split(",")[0].strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        return HostPort(text, default_port)
    try:
        return HostPort(host.strip("[]") or "127.0.0.1", int(port))
    except ValueError:
        raise ConfigError(f"{what}: bad port in {value!r}") from None


def bootstrap_dcs(config: Config) -> dict[str, Any]:
    raw = config.bootstrap.get("dcs")
    return dict(raw) if isinstance(raw, Mapping) else {}


def _int(data: Mapping[str, Any], key: str, default: int, what: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool):
        raise ConfigError(f"{what}.{key} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}.{key} must be an integer, got {value!r}") from None


def check_timing(data: Mapping[str, Any], what: str) -> tuple[int, int, int]:
    """ttl/loop_wait/retry_timeout with Patroni's rule `loop_wait + 2*retry_timeout <= ttl`.

    Raises:
        ConfigError: a value of the wrong type or a violated rule.
    """
    ttl = _int(data, "ttl", 30, what)
    loop_wait = _int(data, "loop_wait", 10, what)
    retry = _int(data, "retry_timeout", 10, what)
    if loop_wait < 1:
        raise ConfigError(f"{what}.loop_wait must be >= 1, got {loop_wait}")
    if ttl < 4:
        raise ConfigError(f"{what}.ttl must be >= 4, got {ttl}")
    if loop_wait + 2 * retry > ttl:
        raise ConfigError(
            f"{what}: loop_wait + 2*retry_timeout must be <= ttl ({loop_wait} + 2*{retry} > {ttl})"
        )
    return ttl, loop_wait, retry


def _check_standby_methods(config: Config, src: str) -> None:
    """A standby cluster whose create_replica_methods hactl cannot run would be refused as a dynamic config later,
    and the cluster would then run without its standby_cluster section: refuse it before anything starts.

    Raises:
        ConfigError: the list does not include basebackup.
    """
    from ctl.dynconfig import validate_dynamic_config

    section = bootstrap_dcs(config).get("standby_cluster")
    if isinstance(section, Mapping) and "create_replica_methods" in section:
        for problem in validate_dynamic_config({"standby_cluster": dict(section)}):
            if "create_replica_methods" in problem:
                raise ConfigError(f"{src}: bootstrap.dcs.{problem}")


def validate(config: Config) -> None:
    """Everything the agent needs, checked before anything starts.

    Raises:
        ConfigError: the first problem, in one line.
    """
    src = config.source or "configuration"
    for value, key in ((config.scope, "scope"), (config.name, "name")):
        if not value:
            raise ConfigError(f"{src}: '{key}' is required for the agent")
    if config.etcd is None:
        raise ConfigError(f"{src}: no DCS configured (add an 'etcd3:' section with 'hosts')")
    split_address(config.restapi.listen, 8008, f"{src}: restapi.listen")
    split_address(config.postgresql.listen, 5432, f"{src}: postgresql.listen")
    if not config.postgresql.data_dir:
        raise ConfigError(f"{src}: 'postgresql.data_dir' is required")
    check_timing(bootstrap_dcs(config), f"{src}: bootstrap.dcs")
    _check_standby_methods(config, src)
    basebackup_options(config)
    initdb = config.bootstrap.get("initdb")
    if initdb is not None and not isinstance(initdb, list):
        raise ConfigError(f"{src}: 'bootstrap.initdb' must be a list")
    users = config.bootstrap.get("users")
    if users is not None:
        if not isinstance(users, Mapping):
            raise ConfigError(f"{src}: 'bootstrap.users' must be a mapping of user name to settings")
        for name, spec in users.items():
            options = spec.get("options") if isinstance(spec, Mapping) else None
            bad = [str(o) for o in options or [] if str(o).strip().lower() not in ROLE_OPTIONS]
            if bad:
                raise ConfigError(f"{src}: bootstrap.users.{name}: unknown role option(s) {', '.join(bad)}")


def ha_settings(config: Config, dynamic: DynamicConfig | None) -> HaSettings:
    """Effective HA settings: the DCS config when present and valid, else bootstrap.dcs."""
    data: Mapping[str, Any] = bootstrap_dcs(config)
    if dynamic is not None and dynamic.data:
        try:
            check_timing(dynamic.data, "config")
            data = dynamic.data
        except ConfigError:
            pass  # a bad value written by another tool: keep the bootstrap timing (logged by the loop)
    ttl, loop_wait, retry = check_timing(data, "config") if data else (30, 10, 10)
    try:
        max_lag = int(data.get("maximum_lag_on_failover", 1048576))
    except (TypeError, ValueError):
        max_lag = 1048576
    pg = data.get("postgresql") if isinstance(data.get("postgresql"), Mapping) else {}
    use_rewind = _truthy(pg.get("use_pg_rewind", config.postgresql.use_pg_rewind))
    tags = config.tags
    nofailover, priority = tags_nofailover(tags), tags_failover_priority(tags)
    mode = DynamicConfig(data).synchronous_mode
    if DynamicConfig(data).is_standby_cluster:
        mode = "off"  # Patroni: synchronous mode is ignored in a standby cluster
    start_timeout = data.get("primary_start_timeout", data.get("master_start_timeout", 300))
    return HaSettings(
        ttl=ttl,
        loop_wait=loop_wait,
        retry_timeout=retry,
        maximum_lag_on_failover=max_lag,
        use_pg_rewind=use_rewind,
        nofailover=nofailover,
        failover_priority=priority,
        replicatefrom=str(tags["replicatefrom"]) if tags.get("replicatefrom") else None,
        synchronous_mode=mode,
        synchronous_mode_strict=_truthy(data.get("synchronous_mode_strict", False)),
        synchronous_node_count=max(1, _int_or(data.get("synchronous_node_count"), 1)),
        maximum_lag_on_syncnode=_int_or(data.get("maximum_lag_on_syncnode"), -1),
        primary_start_timeout=_seconds(start_timeout, 300),
        member_slots_ttl=_seconds(data.get("member_slots_ttl", 1800), 1800),
    )


def _int_or(value: Any, default: int) -> int:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


_UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}


def _seconds(value: Any, default: int) -> int:
    """An integer number of seconds, or a string with a unit (`30min`, `1h`, as Patroni reads them); >= 0."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, (int, float)):
        return max(0, int(value))
    text = str(value).strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return max(0, int(float(text[: -len(unit)]) * _UNITS[unit]))
    try:
        return max(0, int(text))
    except ValueError:
        return default


# pg_basebackup options hactl sets itself (the target, the connection, the password prompt and the progress).
_BASEBACKUP_OWN = frozenset({"pgdata", "D", "dbname", "d", "host", "h", "port", "p", "username", "U", "no-password",
                             "w", "password", "W", "progress", "P", "slot", "S", "format", "F", "write-recovery-conf",
                             "R", "create-slot", "C"})


def basebackup_options(config: Config) -> list[str]:
    """`postgresql.basebackup` (Patroni's list of `name` / `{name: value}`, or a mapping) as pg_basebackup
    arguments (`--max-rate=10M`); `postgresql.create_replica_methods` must include `basebackup`, the only method
    hactl runs (others are ignored with a warning at start).

    Raises:
        ConfigError: a malformed entry, an option hactl sets itself, or no `basebackup` method.
    """
    raw = config.raw.get("postgresql") if isinstance(config.raw.get("postgresql"), Mapping) else {}
    src = f"{config.source or 'configuration'}: postgresql"
    methods = raw.get("create_replica_methods")
    if methods is not None:
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ConfigError(f"{src}.create_replica_methods must be a list of method names")
        if "basebackup" not in methods:
            raise ConfigError(f"{src}.create_replica_methods: hactl creates replicas only with 'basebackup'; "
                              f"add it to {methods}")
    spec = raw.get("basebackup")
    if spec is None:
        return []
    items: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, list):
        for entry in spec:
            if isinstance(entry, str):
                items.append((entry, None))
            elif isinstance(entry, Mapping) and len(entry) == 1:
                (k, v), = entry.items()
                items.append((str(k), v))
            else:
                raise ConfigError(f"{src}.basebackup: each entry is an option name or a one-key mapping, "
                                  f"got {entry!r}")
    else:
        raise ConfigError(f"{src}.basebackup must be a list or a mapping")
    out = []
    for name, value in items:
        name = name.lstrip("-")
        if not name or not all(c.isalnum() or c == "-" for c in name):
            raise ConfigError(f"{src}.basebackup: bad option name {name!r}")
        if name in _BASEBACKUP_OWN:
            raise ConfigError(f"{src}.basebackup: {name} is set by hactl")
        if isinstance(value, (Mapping, list)):
            raise ConfigError(f"{src}.basebackup.{name}: the value must be a string or a number")
        out.append(f"--{name}" if value is None or value is True else f"--{name}={value}")
    return out


def replica_methods_ignored(config: Config) -> list[str]:
    """The create_replica_methods entries hactl does not run (it logs them once at start)."""
    raw = config.raw.get("postgresql") if isinstance(config.raw.get("postgresql"), Mapping) else {}
    methods = raw.get("create_replica_methods")
    return [m for m in methods if m != "basebackup"] if isinstance(methods, list) else []


def use_slots(config: Config, dynamic: DynamicConfig | None) -> bool:
    pg = dynamic.postgresql if dynamic is not None else bootstrap_dcs(config).get("postgresql", {})
    if isinstance(pg, Mapping) and "use_slots" in pg:
        return _truthy(pg["use_slots"])
    return config.postgresql.use_slots


def pg_parameters(config: Config, dynamic: DynamicConfig | None) -> dict[str, Any]:
    """Defaults, then the DCS `postgresql.parameters`, then the local file's (local wins)."""
    params = dict(DEFAULT_PARAMETERS)
    source = dynamic.postgresql if dynamic is not None else bootstrap_dcs(config).get("postgresql", {})
    if isinstance(source, Mapping) and isinstance(source.get("parameters"), Mapping):
        params.update(source["parameters"])
    params.update(config.postgresql.parameters)
    return params


def pg_hba(config: Config, dynamic: DynamicConfig | None) -> tuple[str, ...]:
    if config.postgresql.pg_hba:
        return tuple(config.postgresql.pg_hba)
    source = dynamic.postgresql if dynamic is not None else bootstrap_dcs(config).get("postgresql", {})
    if isinstance(source, Mapping) and isinstance(source.get("pg_hba"), list) and source["pg_hba"]:
        return tuple(str(x) for x in source["pg_hba"])
    boot = config.bootstrap.get("pg_hba")
    if isinstance(boot, list) and boot:
        return tuple(str(x) for x in boot)
    return DEFAULT_HBA
