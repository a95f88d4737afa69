"""PostgreSQL's own `pg_settings` catalogue and the checks of one GUC value against it, as the server parses it. Pure.

The catalogue comes from a running member when the CLI can reach one, else from a table bundled in `ctl/data/`
(regenerated from a real server by `scripts/gen_pg_settings.py`). The value rules follow PostgreSQL's guc.c:
booleans accept unique prefixes of true/false/yes/no, on/off and 1/0; integers and reals accept a unit
(memory: B kB MB GB TB, time: us ms s min h d) only when the parameter has one, and are range-checked after
conversion; enum values are case-insensitive. Hidden enum aliases are not in `pg_settings`: the common
boolean spellings are accepted wherever `on`/`off` are, plus the few listed in `_HIDDEN_ENUM_VALUES`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable, Mapping

_MEMORY_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_UNITS = {"us": 1, "ms": 1000, "s": 1000_000, "min": 60_000_000, "h": 3600_000_000, "d": 86400_000_000}
_BOOL_WORDS = ("true", "false", "yes", "no")
_BOOL_ALIASES = {"true", "false", "yes", "no", "1", "0", "on", "off"}
_HIDDEN_ENUM_VALUES = {"wal_level": {"archive", "hot_standby"}}
_NUMBER = re.compile(r"^\s*([-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))\s*([A-Za-z]*)\s*$")
# Patroni translates these for the running major version, so they are valid although the server does not know them
PATRONI_TRANSLATED = {"wal_keep_segments": "wal_keep_size"}


@dataclass(frozen=True)
class GucSpec:
    """One row of `pg_settings`: what a parameter accepts and when a change takes effect."""

    name: str
    vartype: str  # bool, integer, real, enum, string
    context: str  # postmaster -> restart needed; sighup, superuser, user, ... -> reload is enough
    unit: str | None = None
    min_val: float | None = None
    max_val: float | None = None
    enumvals: tuple[str, ...] = ()

    @property
    def needs_restart(self) -> bool:
        return self.context == "postmaster"


@dataclass(frozen=True)
class Catalogue:
    """The parameters one PostgreSQL major version knows; `source` says where the table came from."""

    major: int
    source: str
    settings: Mapping[str, GucSpec] = field(default_factory=dict)

    def get(self, name: str) -> GucSpec | None:
        return self.settings.get(name.lower())

    def suggest(self, name: str) -> str | None:
        """The closest known parameter name, for "did you mean ...?"."""
        close = difflib.get_close_matches(name.lower(), list(self.settings), n=1, cutoff=0.6)
        return close[0] if close else None

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], major: int, source: str) -> "Catalogue":
        """Build from `SELECT name, vartype, unit, min_val, max_val, enumvals, context FROM pg_settings` rows."""
        settings = {}
        for row in rows:
            name = str(row["name"]).lower()
            settings[name] = GucSpec(
                name=name, vartype=str(row["vartype"]), context=str(row["context"]), unit=row.get("unit") or None,
                min_val=_num(row.get("min_val")), max_val=_num(row.get("max_val")),
                enumvals=tuple(row.get("enumvals") or ()))
        return cls(major=major, source=source, settings=settings)


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def bundled_majors() -> list[int]:
    """The major versions with a bundled table, ascending."""
    found = []
    for entry in resources.files("ctl.data").iterdir():
        m = re.fullmatch(r"pg_settings_(\d+)\.json", entry.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


_BUNDLED: dict[int, Catalogue] = {}


def bundled(major: int | None = None) -> Catalogue:
    """The bundled table for `major`; for an unknown or unbundled major the newest bundled one, saying so in `source`."""
    majors = bundled_majors()
    pick = major if major in majors else majors[-1]
    if pick not in _BUNDLED:
        data = json.loads(resources.files("ctl.data").joinpath(f"pg_settings_{pick}.json").read_text("utf-8"))
        rows = [{"name": name, **row} for name, row in data["settings"].items()]
        _BUNDLED[pick] = Catalogue.from_rows(rows, pick, f"bundled PostgreSQL {pick} table")
    cat = _BUNDLED[pick]
    if major is not None and major != pick:
        return Catalogue(cat.major, f"{cat.source} (no table for PostgreSQL {major})", cat.settings)
    return cat


# ----------------------------------------------------------------------------------------------- value checks


def _show(value: Any) -> str:
    return repr(value)


def parse_bool(text: str) -> bool | None:
    """PostgreSQL's parse_bool: unique prefixes of true/false/yes/no, on/off (two letters at least), 1/0."""
    t = text.strip().lower()
    if not t:
        return None
    for word in _BOOL_WORDS:
        if word.startswith(t):
            return word in ("true", "yes")
    if t in ("on",):
        return True
    if len(t) >= 2 and "off".startswith(t):
        return False
    if t in ("1", "0"):
        return t == "1"
    return None


def _unit_table(unit: str | None) -> tuple[dict[str, int], int] | None:
    """The units a parameter accepts and the size of its own unit in the base (bytes or microseconds)."""
    if not unit:
        return None
    m = re.fullmatch(r"(\d*)([A-Za-z]+)", unit)
    if not m:
        return None
    mult = int(m.group(1) or 1)
    base = m.group(2)
    if base in _MEMORY_UNITS:
        return _MEMORY_UNITS, mult * _MEMORY_UNITS[base]
    if base in _TIME_UNITS:
        return _TIME_UNITS, mult * _TIME_UNITS[base]
    return None


def _range_text(spec: GucSpec) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "?"
        return str(int(v)) if v.is_integer() and abs(v) < 1e18 else f"{v:g}"

    unit = f" (in {spec.unit})" if spec.unit else ""
    return f"between {fmt(spec.min_val)} and {fmt(spec.max_val)}{unit}"


def _check_number(spec: GucSpec, value: Any, path: str) -> str | None:
    units = _unit_table(spec.unit)
    kind = "an integer" if spec.vartype == "integer" else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{path} must be {kind}, got {_show(value)}"
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        m = _NUMBER.match(value)
        if not m:
            return f"{path} must be {kind}{' with an optional unit' if units else ''}, got {_show(value)}"
        raw, unit = m.group(1), m.group(2)
        try:
            number = float(int(raw, 16)) if raw.lower().lstrip("+-").startswith("0x") else float(raw)
        except ValueError:
            return f"{path} must be {kind}, got {_show(value)}"
        if raw.lower().lstrip("+-").startswith("0x") and raw.startswith("-"):
            number = -number
        if unit:
            if units is None:
                return f"{path} takes no unit, got {_show(value)}"
            table, own = units
            if unit not in table:
                return (f"{path} has an invalid unit in {_show(value)}; valid units are "
                        f"{', '.join(table)}")
            number = number * table[unit] / own
    if math.isnan(number) or math.isinf(number):
        return f"{path} must be a finite number, got {_show(value)}"
    if spec.vartype == "integer":
        number = float(round(number))
    if (spec.min_val is not None and number < spec.min_val) or (spec.max_val is not None and number > spec.max_val):
        return f"{path} must be {_range_text(spec)}, got {_show(value)}"
    return None


def check_value(spec: GucSpec, value: Any, path: str) -> str | None:
    """The problem with `value` for the parameter `spec` (None when PostgreSQL would accept it)."""
    if value is None:
        return f"{path} needs a value (null deletes it from the configuration)"
    if isinstance(value, (Mapping, list, tuple)):
        return f"{path} must be a single value, got {_show(value)}"
    if spec.vartype == "bool":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return None
        if isinstance(value, str) and parse_bool(value) is not None:
            return None
        return f"{path} must be a boolean (on/off, true/false, yes/no, 1/0), got {_show(value)}"
    if spec.vartype in ("integer", "real"):
        return _check_number(spec, value, path)
    if spec.vartype == "enum":
        allowed = {v.lower() for v in spec.enumvals} | _HIDDEN_ENUM_VALUES.get(spec.name, set())
        if {"on", "off"} <= allowed:
            allowed |= _BOOL_ALIASES
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        if text.strip().lower() in allowed:
            return None
        return f"{path} must be one of {', '.join(spec.enumvals)}; got {_show(value)}"
    return None  # string: anything printable


def check_parameters(params: Any, catalogue: Catalogue, path: str = "postgresql.parameters") -> list[str]:
    """Every problem in a `postgresql.parameters` mapping: unknown names (with a suggestion) and bad values.

    Names with a dot (`pg_stat_statements.max`) are extension parameters the catalogue may not list; they pass.
    """
    if not isinstance(params, Mapping):
        return [f"{path} must be a mapping of parameter names to values, got {_show(params)}"]
    problems = []
    for name, value in params.items():
        where = f"{path}.{name}"
        name_s = str(name)
        if "." in name_s:
            continue
        spec = catalogue.get(name_s)
        if spec is None:
            translated = PATRONI_TRANSLATED.get(name_s.lower())
            if translated and catalogue.get(translated) is not None:
                continue
            hint = catalogue.suggest(name_s)
            problems.append(f"{where}: unknown PostgreSQL {catalogue.major} parameter"
                            + (f"; did you mean {hint}?" if hint else ""))
            continue
        problem = check_value(spec, value, where)
        if problem:
            problems.append(problem)
    return problems
