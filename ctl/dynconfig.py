"""The dynamic configuration (the DCS `config` key): Patroni's recursive patch and hactl's validation. Pure.

Shared by the agent (`PATCH /config`, `PUT /config`) and the CLI (`edit-config`), so both refuse the same values.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# The PostgreSQL parameters the hactl agent sets unless the DCS or the local file say otherwise. Here, in a pure
# module, so that the agent (ctl/agent/settings.py) and the CLI (edit-config's side effects) share one table.
AGENT_DEFAULT_PARAMETERS: Mapping[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
    "wal_log_hints": "on",  # pg_rewind needs it
    # a replica whose slot is not there yet (the leader creates it on seeing the member) retries after 1 s, not 5 s
    "wal_retrieve_retry_interval": "1s",
}

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


def validate_dynamic_config(new: Mapping[str, Any], *, current: Mapping[str, Any] | None = None) -> list[str]:
    """The problems of a complete dynamic configuration, one line each; an empty list when it may be written.

    One validation for the agent (`PATCH /config`, `PUT /config`) and the CLI (`edit-config`), done by
    ctl.dynconfig_schema: the timing rule (`loop_wait + 2*retry_timeout <= ttl`, integers, ttl >= 4 here) with
    Patroni's defaults (30/10/10) for absent keys, `maximum_lag_on_failover` >= 0, the types and enumerations of
    the known keys, unknown keys (with a suggestion), and `postgresql.parameters` against the bundled pg_settings
    table (no network). With `current`, problems that configuration already had are not reported.
    """
    from ctl import dynconfig_schema, pgsettings

    limits = dynconfig_schema.Limits(ttl=MIN_TTL, loop_wait=MIN_LOOP_WAIT, retry_timeout=MIN_RETRY_TIMEOUT)
    result = dynconfig_schema.validate(new, current, catalogue=pgsettings.bundled(), limits=limits)
    return list(result.problems)
