"""Where configuration comes from: patroni.yml (a file or a directory of them), PATRONI_CONFIGURATION, PATRONI_*
variables and --dcs-url, merged into one raw mapping shaped like patroni.yml. ctl.config types and checks it.

The only YAML loader for configuration. Environment variables override the file, as in Patroni.
"""

from __future__ import annotations

import os
from typing import Any, Mapping
from urllib.parse import urlsplit

from ctl.errors import ConfigError, UsageError

DEFAULT_CONFIG_FILE = os.path.join("~", ".config", "patroni", "patronictl.yaml")
DEFAULT_ETCD_PORT = 2379


def gather(path: str | None, env: Mapping[str, str], dcs_url: str | None,
           require_file: bool) -> tuple[dict[str, Any], str]:
    """The raw configuration and where it came from (a file name, "PATRONI_CONFIGURATION" or "environment").

    Raises:
        ConfigError: the file is missing, unreadable or malformed.
        UsageError: --dcs-url names an unsupported scheme or a bad port.
    """
    raw: dict[str, Any] = {}
    origin = "environment"
    if path is not None or require_file:
        expanded = os.path.expanduser(path or DEFAULT_CONFIG_FILE)
        if not os.path.exists(expanded):
            raise ConfigError(f"config file {expanded} does not exist (check -c/--config-file)")
        if not os.access(expanded, os.R_OK):
            raise ConfigError(f"config file {expanded} is not readable (check -c/--config-file)")
        raw = _read_file(expanded)
        origin = expanded
    else:
        default = os.path.expanduser(DEFAULT_CONFIG_FILE)
        if env.get("PATRONI_CONFIGURATION"):
            data = _yaml_load(env["PATRONI_CONFIGURATION"], "PATRONI_CONFIGURATION")
            if not isinstance(data, dict):
                raise ConfigError("PATRONI_CONFIGURATION must hold a YAML mapping")
            raw, origin = data, "PATRONI_CONFIGURATION"
        elif os.path.exists(default):
            raw = _read_file(default)
            origin = default
    _merge(raw, environment_overrides(env))
    if dcs_url:
        section, namespace = parse_dcs_url(dcs_url)
        raw.pop("etcd", None)
        raw["etcd3"] = section
        if namespace:
            raw["namespace"] = namespace
    return raw, origin


def _yaml_load(text: str, origin: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{origin}, line {mark.line + 1}, column {mark.column + 1}" if mark else origin
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {origin}: {exc}") from None


def _read_file(path: str) -> dict[str, Any]:
    if os.path.isdir(path):
        merged: dict[str, Any] = {}
        for entry in sorted(os.listdir(path)):
            if entry.endswith((".yml", ".yaml")):
                _merge(merged, _read_file(os.path.join(path, entry)))
        return merged
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    data = _yaml_load(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = dict(v) if isinstance(v, Mapping) else v
    return base


def parse_list(value: str) -> list[str]:
    """PATRONI_*_HOSTS and *_ALLOWLIST: a YAML/JSON list, or a comma-separated string."""
    value = value.strip()
    if value.startswith("["):
        parsed = _yaml_load(value, "environment")
        if isinstance(parsed, list):
            return [str(v).strip() for v in parsed if str(v).strip()]
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip().strip("'\"")]


_SIMPLE_ENV = {
    "PATRONI_NAME": ("name",),
    "PATRONI_NAMESPACE": ("namespace",),
    "PATRONI_SCOPE": ("scope",),
}
_SECTION_KEYS = {
    "RESTAPI": ("restapi", ["LISTEN", "CONNECT_ADDRESS", "CERTFILE", "KEYFILE", "KEYFILE_PASSWORD", "CAFILE",
                            "VERIFY_CLIENT", "ALLOWLIST_INCLUDE_MEMBERS"]),
    "CTL": ("ctl", ["INSECURE", "CACERT", "CERTFILE", "KEYFILE", "KEYFILE_PASSWORD"]),
    "POSTGRESQL": ("postgresql", ["LISTEN", "CONNECT_ADDRESS", "DATA_DIR", "BIN_DIR", "PGPASS", "USE_PG_REWIND"]),
    "ETCD3": ("etcd3", ["HOST", "URL", "PROXY", "CACERT", "CERT", "KEY", "USERNAME", "PASSWORD", "PROTOCOL"]),
    "ETCD": ("etcd", ["HOST", "URL", "PROXY", "CACERT", "CERT", "KEY", "USERNAME", "PASSWORD", "PROTOCOL"]),
    "LOG": ("log", ["LEVEL", "DIR", "FORMAT"]),
}


def environment_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration that PATRONI_* variables describe, shaped like patroni.yml."""
    out: dict[str, Any] = {}
    for var, path in _SIMPLE_ENV.items():
        if env.get(var):
            out[path[0]] = env[var]
    for prefix, (section, names) in _SECTION_KEYS.items():
        for name in names:
            value = env.get(f"PATRONI_{prefix}_{name}")
            if value is not None and value != "":
                out.setdefault(section, {})[name.lower()] = value
    for prefix in ("ETCD3", "ETCD"):
        value = env.get(f"PATRONI_{prefix}_HOSTS")
        if value:
            out.setdefault(prefix.lower(), {})["hosts"] = parse_list(value)
    for section in ("RESTAPI", "CTL"):
        user, pwd = env.get(f"PATRONI_{section}_USERNAME"), env.get(f"PATRONI_{section}_PASSWORD")
        if user or pwd:
            auth = out.setdefault(section.lower(), {}).setdefault("authentication", {})
            if user:
                auth["username"] = user
            if pwd:
                auth["password"] = pwd
    allow = env.get("PATRONI_RESTAPI_ALLOWLIST")
    if allow:
        out.setdefault("restapi", {})["allowlist"] = parse_list(allow)
    for role in ("SUPERUSER", "REPLICATION", "REWIND"):
        user, pwd = env.get(f"PATRONI_{role}_USERNAME"), env.get(f"PATRONI_{role}_PASSWORD")
        if user or pwd:
            auth = out.setdefault("postgresql", {}).setdefault("authentication", {}).setdefault(role.lower(), {})
            if user:
                auth["username"] = user
            if pwd:
                auth["password"] = pwd
    return out


def parse_dcs_url(url: str) -> tuple[dict[str, Any], str | None]:
    """`--dcs-url etcd3://host:port/namespace` -> (DCS section, namespace or None).

    Raises:
        UsageError: an unsupported scheme.
    """
    if "://" not in url:
        url = "etcd3://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("etcd", "etcd3"):
        raise UsageError(f"unknown dcs scheme: {scheme} (hactl supports etcd3:// and etcd://)")
    host = parts.hostname or "localhost"
    try:
        port = parts.port or DEFAULT_ETCD_PORT
    except ValueError:
        raise UsageError(f"bad port in --dcs-url {url!r}") from None
    namespace = parts.path if parts.path and parts.path != "/" else None
    return {"hosts": [f"{host}:{port}"]}, namespace
