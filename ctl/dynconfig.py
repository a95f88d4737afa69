"""The dynamic configuration (the DCS `config` key): Patroni's recursive patch and hactl's validation. Pure.

Shared by the agent (`PATCH /config`, `PUT /config`) and the CLI (`edit-config`), so both refuse the same values.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# Patroni documents ttl >= 20; hactl's own tests run with ttl 8, and the agent's start-up check accepts >= 4.
MIN_TTL = 4
MIN_LOOP_WAIT = 1
MIN_RETRY_TIMEOUT = 1


def patch_config(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated from `patch` recursively, as Patroni's `patch_config`; neither argument is modified.

    A `null` in the patch deletes the key; a mapping merges into a mapping; any other value replaces the old one
    unless both print the same (`str()`), so `"100"` does not retype an existing `100`. A new mapping is added
    without its nulls (a null there would delete nothing).
    """
    result: dict[str, Any] = copy.deepcopy(dict(base))
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif isinstance(value, Mapping):
            old = result.get(name)
            result[name] = patch_config(old if isinstance(old, Mapping) else {}, value)
        elif name not in result or str(result[name]) != str(value):
            result[name] = copy.deepcopy(value)
    return result


def _int(data: Mapping[str, Any], key: str, default: int, problems: list[str]) -> int | None:
    value = data.get(key, default)
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        problems.append(f"{key} must be an integer, got {value!r}")
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.append(f"{key} must be an integer, got {value!r}")
        return None


def validate_dynamic_config(new: Mapping[str, Any]) -> list[str]:
    """The problems of a complete dynamic configuration, one line each; an empty list when it may be written.

    Checks the timing rule (`loop_wait + 2*retry_timeout <= ttl`, integers, ttl >= 4) with Patroni's defaults
    (30/10/10) for absent keys, and that `maximum_lag_on_failover` is a non-negative integer.
    """
    if not isinstance(new, Mapping):
        return ["the configuration must be a JSON object"]
    problems: list[str] = []
    ttl = _int(new, "ttl", 30, problems)
    loop_wait = _int(new, "loop_wait", 10, problems)
    retry = _int(new, "retry_timeout", 10, problems)
    if ttl is not None and ttl < MIN_TTL:
        problems.append(f"ttl must be >= {MIN_TTL}, got {ttl}")
    if loop_wait is not None and loop_wait < MIN_LOOP_WAIT:
        problems.append(f"loop_wait must be >= {MIN_LOOP_WAIT}, got {loop_wait}")
    if retry is not None and retry < MIN_RETRY_TIMEOUT:
        problems.append(f"retry_timeout must be >= {MIN_RETRY_TIMEOUT}, got {retry}")
    if ttl is not None and loop_wait is not None and retry is not None and loop_wait + 2 * retry > ttl:
        problems.append(f"loop_wait + 2*retry_timeout must be <= ttl ({loop_wait} + 2*{retry} > {ttl})")
    if "maximum_lag_on_failover" in new:
        lag = _int(new, "maximum_lag_on_failover", 0, problems)
        if lag is not None and lag < 0:
            problems.append(f"maximum_lag_on_failover must be >= 0, got {lag}")
    return problems
