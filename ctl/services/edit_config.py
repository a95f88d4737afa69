"""edit-config and show-config --effective: build the new dynamic configuration, check it, describe it, write it.

Pure steps (`apply_edits`, `plan_change`, `effective_config`) return data; `write_config` and `load_catalogue`
do the I/O. Prompts, the editor and --force live in ctl.cli.editconfig; all text in ctl.render.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from ctl import pgsettings
from ctl.dcs import codec, keys
from ctl.dynconfig import AGENT_DEFAULT_PARAMETERS, patch_config
from ctl.dynconfig_schema import PATRONI_LIMITS, Validation, validate
from ctl.errors import CasFailed, UsageError
from ctl.model import Cluster

PARAMS_PREFIX = "postgresql.parameters."
# Parameters the agent never takes from the configuration (ctl/pg/conf.py OWNED_BY_HACTL; a unit test keeps them equal)
AGENT_OWNED_PARAMETERS = ("listen_addresses", "port", "unix_socket_directories", "hba_file", "data_directory",
                          "config_file", "primary_conninfo", "primary_slot_name", "recovery_target_timeline")
TIMING_DEFAULTS: Mapping[str, Any] = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                                      "maximum_lag_on_failover": 1048576}


class ConfigWriter(Protocol):
    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> int: ...


# ----------------------------------------------------------------------------------------------- building the edit


@dataclass(frozen=True)
class Edits:
    """What the command line asked for, applied in patronictl's order: replace, apply, then -s and -p pairs."""

    replace: Mapping[str, Any] | None = None
    apply: Mapping[str, Any] | None = None
    pairs: Sequence[str] = ()
    pg_pairs: Sequence[str] = ()

    @property
    def any(self) -> bool:
        return self.replace is not None or self.apply is not None or bool(self.pairs) or bool(self.pg_pairs)


def load_yaml_mapping(text: str, origin: str) -> dict[str, Any]:
    """A YAML document that must be a mapping (an empty document is an empty mapping).

    Raises:
        UsageError: malformed YAML, or not a mapping.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}, line {mark.line + 1}, column {mark.column + 1}" if mark else origin
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UsageError(f"malformed YAML in {where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError(f"{origin} must hold a YAML mapping (key: value), got {type(data).__name__}")
    return dict(data)


def _set_path(config: dict[str, Any], path: list[str], value: Any, prefix: tuple[str, ...] = ()) -> None:
    # GUC names may contain dots (pg_stat_statements.max): below postgresql.parameters the rest is one key
    if prefix == ("postgresql", "parameters"):
        path = [".".join(path)]
    key = path[0]
    if len(path) == 1:
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
        return
    if not isinstance(config.get(key), dict):
        config[key] = {}
    _set_path(config[key], path[1:], value, prefix + (key,))
    if config[key] == {}:
        del config[key]


def parse_pair(pair: str) -> tuple[list[str], Any]:
    """`a.b=VALUE` -> (["a", "b"], YAML value); `null` or an empty value means delete.

    Raises:
        UsageError: no `=`, an empty key, or a value that is not valid YAML.
    """
    import yaml

    if "=" not in pair:
        raise UsageError(f"invalid parameter setting {pair!r}: expected KEY=VALUE")
    key, raw = pair.split("=", 1)
    path = key.strip().split(".")
    if not key.strip() or any(not p for p in path):
        raise UsageError(f"invalid parameter setting {pair!r}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UsageError(f"invalid parameter setting {pair!r}: the value is not valid YAML") from None
    return path, value


def apply_pairs(config: Mapping[str, Any], pairs: Sequence[str]) -> dict[str, Any]:
    """`config` with each KEY=VALUE pair set (dotted paths, YAML values, null deletes); the input is not modified.

    Raises:
        UsageError: see parse_pair.
    """
    import copy

    result = copy.deepcopy(dict(config))
    for pair in pairs:
        path, value = parse_pair(pair)
        _set_path(result, path, value)
    return result


def apply_edits(current: Mapping[str, Any], edits: Edits) -> dict[str, Any]:
    """The new configuration: --replace (onto nothing), then --apply (recursive merge, null deletes), then -s, -p.

    Raises:
        UsageError: a malformed pair.
    """
    data: dict[str, Any] = dict(current)
    if edits.replace is not None:
        data = patch_config({}, edits.replace)
    if edits.apply is not None:
        data = patch_config(data, edits.apply)
    return apply_pairs(data, [*edits.pairs, *(PARAMS_PREFIX + p for p in edits.pg_pairs)])


def dump(data: Mapping[str, Any]) -> str:
    """The configuration as patronictl shows and edits it."""
    import yaml

    return yaml.safe_dump(dict(data), default_flow_style=False, allow_unicode=True, width=200)


def unified_diff(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile="", tofile=""))


# ----------------------------------------------------------------------------------------------- describing it


@dataclass(frozen=True)
class ParamChange:
    name: str
    old: Any  # None: added
    new: Any  # None: removed
    needs_restart: bool | None  # None: not in the catalogue (an extension's parameter)
    ignored: bool = False  # the agent sets it on each member itself


@dataclass(frozen=True)
class Override:
    name: str
    member: str
    local_value: Any


@dataclass(frozen=True)
class ConfigChange:
    """Everything edit-config shows before it asks; `validation` is None with --no-validate."""

    before: Mapping[str, Any]
    after: Mapping[str, Any]
    mod_revision: int
    diff: str
    validation: Validation | None
    catalogue_source: str | None
    parameters: tuple[ParamChange, ...] = ()
    overrides: tuple[Override, ...] = ()
    overrides_known_for: tuple[str, ...] = ()
    members: tuple[str, ...] = field(default_factory=tuple)
    scope: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.diff)

    @property
    def restart_needed(self) -> list[str]:
        return [p.name for p in self.parameters if p.needs_restart and not p.ignored]


def _params(data: Mapping[str, Any]) -> Mapping[str, Any]:
    pg = data.get("postgresql")
    params = pg.get("parameters") if isinstance(pg, Mapping) else None
    return params if isinstance(params, Mapping) else {}


def parameter_changes(before: Mapping[str, Any], after: Mapping[str, Any],
                      catalogue: pgsettings.Catalogue | None) -> tuple[ParamChange, ...]:
    old, new = _params(before), _params(after)
    changes = []
    for name in sorted(set(old) | set(new)):
        if name in old and name in new and str(old[name]) == str(new[name]):
            continue
        spec = catalogue.get(str(name)) if catalogue is not None else None
        changes.append(ParamChange(str(name), old.get(name), new.get(name),
                                   spec.needs_restart if spec is not None else None,
                                   ignored=str(name).lower() in AGENT_OWNED_PARAMETERS))
    return tuple(changes)


def plan_change(cluster: Cluster, after: Mapping[str, Any], catalogue: pgsettings.Catalogue | None,
                local_parameters: Mapping[str, Mapping[str, Any]] | None = None,
                check: bool = True) -> ConfigChange:
    """Compare, validate and describe the new configuration against the cluster's current one. Pure.

    `local_parameters` maps member name -> its patroni.yml `postgresql.parameters`, for the members whose file is
    known (members do not publish theirs).
    """
    config = cluster.config
    before = dict(config.data) if config is not None else {}
    diff = unified_diff(dump(before), dump(after))
    validation = validate(after, before, catalogue, PATRONI_LIMITS) if check else None
    params = parameter_changes(before, after, catalogue)
    local_parameters = local_parameters or {}
    overrides = tuple(Override(p.name, member, local[p.name])
                      for p in params for member, local in sorted(local_parameters.items()) if p.name in local)
    return ConfigChange(before=before, after=dict(after), mod_revision=config.mod_revision if config else 0,
                        diff=diff, validation=validation, catalogue_source=catalogue.source if catalogue else None,
                        parameters=params, overrides=overrides, overrides_known_for=tuple(sorted(local_parameters)),
                        members=tuple(m.name for m in cluster.members), scope=cluster.scope)


def local_parameters_of(cluster: Cluster, config: Any) -> dict[str, Mapping[str, Any]]:
    """The local `postgresql.parameters` hactl can see: only the -c file's, when it is one member's patroni.yml."""
    name = getattr(config, "name", None)
    if name and getattr(config, "scope", None) == cluster.scope and any(m.name == name for m in cluster.members):
        return {name: dict(config.postgresql.parameters)}
    return {}


# ----------------------------------------------------------------------------------------------- I/O


def load_catalogue(cluster: Cluster, config: Any, timeout: float) -> pgsettings.Catalogue:
    """PostgreSQL's pg_settings from the leader when the -c file is a node's patroni.yml (it holds the superuser
    credentials), else the bundled table. Never raises: an unreachable leader falls back to the bundled table.
    """
    raw = getattr(config, "raw", None) or {}
    leader = cluster.leader_member
    if not isinstance(raw.get("postgresql"), Mapping) or leader is None or not leader.conn_url:
        return pgsettings.bundled()
    try:
        import psycopg

        user = config.postgresql.superuser
        with psycopg.connect(leader.conn_url, user=user.username, password=user.password,
                             connect_timeout=max(1, int(timeout / 2)), application_name="hactl edit-config") as conn:
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
            rows = conn.execute("SELECT name, vartype, unit, min_val, max_val, enumvals, context "
                                "FROM pg_settings").fetchall()
    except Exception:  # noqa: BLE001 - any failure means: use the bundled table
        return pgsettings.bundled()
    names = ("name", "vartype", "unit", "min_val", "max_val", "enumvals", "context")
    return pgsettings.Catalogue.from_rows([dict(zip(names, r)) for r in rows], major,
                                          f"pg_settings of {leader.name} (PostgreSQL {major})")


def write_config(dcs: ConfigWriter, namespace: str, scope: str, change: ConfigChange) -> int:
    """Compare-and-set the config key on the revision it was read at; returns the new revision.

    Raises:
        CasFailed: someone else wrote the config key since it was read; nothing was written.
        ResultUnknown, DcsUnavailable, DcsError: from the DCS client.
    """
    try:
        return dcs.put(keys.key(namespace, scope, keys.CONFIG), codec.dumps(dict(change.after)),
                       mod_revision=change.mod_revision)
    except CasFailed:
        raise CasFailed("the configuration changed underneath: someone else wrote it after it was read; "
                        "nothing was written") from None


# ----------------------------------------------------------------------------------------------- --effective


@dataclass(frozen=True)
class EffectiveValue:
    key: str  # dotted path
    value: Any
    source: str  # "DCS", "local file", "default"


@dataclass(frozen=True)
class EffectiveConfig:
    member: str
    values: tuple[EffectiveValue, ...]
    layers: tuple[str, ...]  # the layers that were known
    note: str | None = None


def effective_config(cluster: Cluster, member: str, config: Any) -> EffectiveConfig:
    """The dynamic settings `member` runs with and the layer each one came from, by the hactl agent's rules:
    timing keys DCS > default; postgresql.parameters local > DCS > default; pg_hba local > DCS > default;
    use_pg_rewind / use_slots DCS > local > default. The local layer is known only when the -c file is
    that member's patroni.yml.

    Raises:
        NotFound: no such member.
    """
    from ctl.errors import NotFound

    if not any(m.name == member for m in cluster.members):
        names = ", ".join(m.name for m in cluster.members) or "none"
        raise NotFound(f"{member!r} is not a member of cluster {cluster.scope!r} (members: {names})")
    dcs = dict(cluster.config.data) if cluster.config is not None else {}
    local_known = bool(local_parameters_of(cluster, config)) and config.name == member
    local_pg = config.postgresql if local_known else None
    values: dict[str, EffectiveValue] = {}

    def put(key: str, value: Any, source: str) -> None:
        values[key] = EffectiveValue(key, value, source)

    for key, default in TIMING_DEFAULTS.items():
        put(key, dcs.get(key, default), "DCS" if key in dcs else "default")
    for key, value in dcs.items():
        if key not in ("postgresql",) and key not in TIMING_DEFAULTS:
            put(key, value, "DCS")
    dcs_pg = dcs.get("postgresql") if isinstance(dcs.get("postgresql"), Mapping) else {}
    for name, value in AGENT_DEFAULT_PARAMETERS.items():
        put(PARAMS_PREFIX + name, value, "default")
    for name, value in _params(dcs).items():
        put(PARAMS_PREFIX + str(name), value, "DCS")
    if local_pg is not None:
        for name, value in local_pg.parameters.items():
            put(PARAMS_PREFIX + str(name), value, "local file")
    if local_pg is not None and local_pg.pg_hba:
        put("postgresql.pg_hba", list(local_pg.pg_hba), "local file")
    elif isinstance(dcs_pg.get("pg_hba"), list) and dcs_pg["pg_hba"]:
        put("postgresql.pg_hba", dcs_pg["pg_hba"], "DCS")
    else:
        put("postgresql.pg_hba", "(hactl's built-in defaults)", "default")
    for key, default in (("use_pg_rewind", False), ("use_slots", True)):
        if key in dcs_pg:
            put(f"postgresql.{key}", dcs_pg[key], "DCS")
        elif local_pg is not None:
            put(f"postgresql.{key}", getattr(local_pg, key), "local file")
        else:
            put(f"postgresql.{key}", default, "default")
    for key, value in dcs_pg.items():
        if key not in ("parameters", "pg_hba", "use_pg_rewind", "use_slots"):
            put(f"postgresql.{key}", value, "DCS")
    layers = ("DCS", "local file", "default") if local_known else ("DCS", "default")
    note = None if local_known else (
        f"the local layer of {member} is unknown: its patroni.yml is not the -c configuration, and members do "
        f"not publish their local settings; local postgresql.parameters there override the values below")
    return EffectiveConfig(member, tuple(sorted(values.values(), key=lambda v: v.key)), layers, note)
