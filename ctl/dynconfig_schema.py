"""The schema of Patroni's dynamic configuration (the DCS `config` key): types, ranges, enumerations, known keys. Pure.

`validate()` lists every problem of a whole configuration, one line each, as `<dotted.path> must be ...`.
`postgresql.parameters` are checked against a `ctl.pgsettings.Catalogue` (PostgreSQL's own pg_settings).
Two sets of limits exist: Patroni's documented minima (ttl >= 20, retry_timeout >= 3), which `edit-config`
enforces, and the agent's own start-up minima (ttl >= 4), which `PATCH /config` enforces so hactl's short-ttl
test clusters stay editable. A problem the current configuration already has is reported separately
(`Validation.existing`) so an operator is never blocked from an unrelated change by someone else's mistake.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ctl.pgsettings import Catalogue, check_parameters, parse_bool


@dataclass(frozen=True)
class Limits:
    ttl: int = 20
    loop_wait: int = 1
    retry_timeout: int = 3


PATRONI_LIMITS = Limits()  # docs/dynamic_configuration.rst: "minimum possible value"
AGENT_LIMITS = Limits(ttl=4, loop_wait=1, retry_timeout=1)  # what hactl's agent starts with

DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
SYNCHRONOUS_MODES = ("false", "true", "on", "off", "quorum")


@dataclass(frozen=True)
class Validation:
    """`problems` block a write; `existing` were already in the current configuration and are only warnings."""

    problems: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------------------------- value checkers
# Each takes (value, path) and returns a problem or None.


def _integer(value: Any) -> int | None:
    """Patroni's reading of an integer setting: an int, an integral float, or a string holding one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _int_check(minimum: int | None = None) -> Callable[[Any, str], str | None]:
    def check(value: Any, path: str) -> str | None:
        number = _integer(value)
        if number is None:
            return f"{path} must be an integer, got {value!r}"
        if minimum is not None and number < minimum:
            return f"{path} must be >= {minimum}, got {number}"
        return None

    return check


def _bool(value: Any, path: str) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and parse_bool(value) is not None):
        return None
    return f"{path} must be a boolean (true/false), got {value!r}"


def _str(value: Any, path: str) -> str | None:
    return None if isinstance(value, str) else f"{path} must be a string, got {value!r}"


def _synchronous_mode(value: Any, path: str) -> str | None:
    text = ("true" if value else "false") if isinstance(value, bool) else value
    if isinstance(text, str) and text.strip().lower() in SYNCHRONOUS_MODES:
        return None
    return f"{path} must be one of {', '.join(SYNCHRONOUS_MODES)}; got {value!r}"


def _str_list(value: Any, path: str) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return f"{path} must be a list of strings, got {value!r}"


def _replica_methods(value: Any, path: str) -> str | None:
    """hactl creates replicas (and a standby cluster's leader) with pg_basebackup only: the list must name it."""
    problem = _str_list(value, path)
    if problem is None and "basebackup" not in value:
        return (f"{path}: hactl creates replicas only with 'basebackup'; {value!r} does not include it "
                "(other methods, e.g. a restore from a backup tool, are not supported)")
    return problem


def _mapping(value: Any, path: str) -> str | None:
    return None if isinstance(value, Mapping) else f"{path} must be a mapping, got {value!r}"


def _int_or_str(value: Any, path: str) -> str | None:
    if isinstance(value, str) or _integer(value) is not None:
        return None
    return f"{path} must be an integer or a duration like '30min', got {value!r}"


def _duration(value: Any, path: str) -> str | None:
    """Seconds >= 0, or a number with a unit as Patroni reads it (`30min`, `1h`, `90s`, `1d`)."""
    import re

    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*(ms|s|min|h|d)?\s*", value):
        return None
    number = _integer(value)
    if number is not None and number >= 0:
        return None
    return f"{path} must be a number of seconds >= 0 or a duration like '30min', got {value!r}"


def _any(value: Any, path: str) -> str | None:
    return None


def _list(value: Any, path: str) -> str | None:
    return None if isinstance(value, list) else f"{path} must be a list, got {value!r}"


# Patroni 4.1 dynamic configuration keys (docs/dynamic_configuration.rst); ttl, loop_wait and retry_timeout are
# checked by _timing with the limits in force.
TOP_LEVEL: dict[str, Callable[[Any, str], str | None]] = {
    "ttl": _any, "loop_wait": _any, "retry_timeout": _any,
    "maximum_lag_on_failover": _any,  # checked by validate() in the historical order
    "maximum_lag_on_syncnode": _int_check(-1),
    "max_timelines_history": _int_check(0),
    "primary_start_timeout": _int_check(0),
    "primary_stop_timeout": _int_check(0),
    "master_start_timeout": _int_check(0),  # pre-3.0 spellings Patroni still reads
    "master_stop_timeout": _int_check(0),
    "primary_race_backoff": _int_check(0),
    "synchronous_mode": _synchronous_mode,
    "synchronous_mode_strict": _bool,
    "synchronous_node_count": _int_check(1),
    "failsafe_mode": _bool,
    "check_timeline": _bool,
    "pause": _bool,
    "member_slots_ttl": _duration,
    "postgresql": _mapping,
    "standby_cluster": _mapping,
    "slots": _mapping,
    "permanent_slots": _mapping,  # older spellings of `slots` Patroni still reads
    "permanent_replication_slots": _mapping,
    "ignore_slots": _list,
}

POSTGRESQL: dict[str, Callable[[Any, str], str | None]] = {
    "parameters": _mapping,  # names and values: ctl.pgsettings
    "pg_hba": _str_list,
    "pg_ident": _str_list,
    "use_pg_rewind": _bool,
    "use_slots": _bool,
    "recovery_conf": _mapping,
    "remove_data_directory_on_rewind_failure": _bool,
    "remove_data_directory_on_diverged_timelines": _bool,
}
# Settings Patroni takes only from the local patroni.yml; in the dynamic configuration they are silently ignored.
POSTGRESQL_LOCAL_ONLY = ("listen", "connect_address", "proxy_address", "data_dir", "bin_dir", "config_dir",
                         "pgpass", "authentication", "callbacks", "create_replica_methods", "bin_name")

STANDBY_CLUSTER: dict[str, Callable[[Any, str], str | None]] = {
    "host": _str, "port": _int_check(1), "primary_slot_name": _str, "create_replica_methods": _replica_methods,
    "restore_command": _str, "archive_cleanup_command": _str, "recovery_min_apply_delay": _int_or_str,
    "leader_tag": _str, "nofailover": _bool,
}


def _unknown(path: str, name: Any, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    where = f"{path}.{name}" if path else str(name)
    return f"unknown key {where}" + (f"; did you mean {close[0]}?" if close else "")


def _section(data: Mapping[str, Any], path: str, schema: Mapping[str, Callable[[Any, str], str | None]],
             problems: list[str], local_only: tuple[str, ...] = ()) -> None:
    for name, value in data.items():
        where = f"{path}.{name}" if path else str(name)
        if name in local_only:
            problems.append(f"{where} is a local setting (patroni.yml only); the dynamic configuration ignores it")
        elif name not in schema:
            problems.append(_unknown(path, name, schema))
        else:
            problem = schema[name](value, where)
            if problem:
                problems.append(problem)


def _timing(data: Mapping[str, Any], limits: Limits, problems: list[str]) -> None:
    values: dict[str, int | None] = {}
    for key in ("ttl", "loop_wait", "retry_timeout"):
        raw = data.get(key, DEFAULTS[key])
        values[key] = _integer(raw)
        if values[key] is None:
            problems.append(f"{key} must be an integer, got {raw!r}")
    for key in ("ttl", "loop_wait", "retry_timeout"):
        minimum = getattr(limits, key)
        number = values[key]
        if number is not None and number < minimum:
            problems.append(f"{key} must be >= {minimum}, got {number}")
    ttl, loop_wait, retry = values["ttl"], values["loop_wait"], values["retry_timeout"]
    if ttl is not None and loop_wait is not None and retry is not None and loop_wait + 2 * retry > ttl:
        problems.append(f"loop_wait + 2*retry_timeout must be <= ttl ({loop_wait} + 2*{retry} > {ttl})")


def problems_of(data: Any, catalogue: Catalogue | None = None, limits: Limits = PATRONI_LIMITS) -> list[str]:
    """Every problem of one complete dynamic configuration, in a stable order (timing rules first).

    Without a catalogue the names and values of `postgresql.parameters` are not checked.
    """
    if not isinstance(data, Mapping):
        return ["the configuration must be a JSON object"]
    problems: list[str] = []
    _timing(data, limits, problems)
    if "maximum_lag_on_failover" in data:
        problem = _int_check(0)(data["maximum_lag_on_failover"], "maximum_lag_on_failover")
        if problem:
            problems.append(problem)
    _section(data, "", TOP_LEVEL, problems)
    pg = data.get("postgresql")
    if isinstance(pg, Mapping):
        _section(pg, "postgresql", POSTGRESQL, problems, POSTGRESQL_LOCAL_ONLY)
        params = pg.get("parameters")
        if catalogue is not None and isinstance(params, Mapping):
            problems.extend(check_parameters(params, catalogue))
    sc = data.get("standby_cluster")
    if isinstance(sc, Mapping):
        _section(sc, "standby_cluster", STANDBY_CLUSTER, problems)
    slots = data.get("slots")
    if isinstance(slots, Mapping):
        for name, slot in slots.items():
            problems.extend(_slot_problems(f"slots.{name}", slot))
    return problems


def _slot_problems(path: str, slot: Any) -> list[str]:
    if not isinstance(slot, Mapping):
        return [f"{path} must be a mapping with a type, got {slot!r}"]
    kind = slot.get("type")
    if kind not in ("physical", "logical"):
        return [f"{path}.type must be physical or logical, got {kind!r}"]
    if kind == "logical":
        return [f"{path}.{k} is required for a logical slot" for k in ("database", "plugin") if not slot.get(k)]
    return []


def validate(new: Any, current: Any = None, catalogue: Catalogue | None = None,
             limits: Limits = PATRONI_LIMITS) -> Validation:
    """Problems of `new`; those `current` already had go to `existing` (warnings) instead of blocking."""
    found = problems_of(new, catalogue, limits)
    if current is None:
        return Validation(problems=found)
    before = set(problems_of(current, catalogue, limits))
    return Validation(problems=[p for p in found if p not in before], existing=[p for p in found if p in before])
