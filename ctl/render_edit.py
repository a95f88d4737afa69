"""Output of `edit-config` and `show-config --effective`: the coloured diff, the change's effects, the layers.

Strings only; never fetches anything. The inputs are ctl.services.edit_config's results, typed loosely (Any) so that
rendering does not import the services layer.
"""

from __future__ import annotations

import json
from typing import Any


def render_diff(diff: str, color: bool = False) -> str:
    """A unified diff; on a terminal coloured by rich (removed red, added green, hunks cyan), else as is."""
    if not color:
        return diff
    import io

    from rich.console import Console
    from rich.text import Text

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=1000, highlight=False,
                      soft_wrap=True)
    for line in diff.splitlines():
        style = ("bold" if line.startswith(("--- ", "+++ ")) else "red" if line.startswith("-")
                 else "green" if line.startswith("+") else "cyan" if line.startswith("@@") else "")
        console.print(Text(line, style=style))
    return buf.getvalue()


def _short(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def render_change_effects(change: Any) -> str:
    """After the diff: which parameters change and how they take effect, local overrides, validation warnings.

    `change` is a ctl.services.edit_config.ConfigChange.
    """
    lines: list[str] = []
    if change.parameters:
        lines.append("PostgreSQL parameters changed:")
        width = max(len(p.name) for p in change.parameters)
        for p in change.parameters:
            effect = ("ignored: each member's agent sets it itself" if p.ignored
                      else "restart needed: members will show pending restart" if p.needs_restart
                      else "reload" if p.needs_restart is False else "not in the catalogue: effect unknown")
            lines.append(f"  {p.name.ljust(width)}  {_short(p.old)} -> {_short(p.new)}  ({effect})")
        if change.restart_needed:
            lines.append(f"Pending restart after this change: {', '.join(change.restart_needed)} "
                         f"(apply with 'hactl restart {change.scope or 'CLUSTER'} --pending')")
        for o in change.overrides:
            lines.append(f"Overridden on {o.member} by its local patroni.yml: {o.name} = {o.local_value} "
                         f"(this change does not reach it)")
        others = [m for m in change.members if m not in change.overrides_known_for]
        if others:
            known = (f"known only for {', '.join(change.overrides_known_for)} (the -c file)"
                     if change.overrides_known_for else "not known")
            lines.append(f"Local overrides on {', '.join(others)}: {known}; members do not report their "
                         f"local postgresql.parameters")
    if change.catalogue_source:
        lines.append(f"Parameters checked against: {change.catalogue_source}")
    if change.validation is not None:
        for problem in change.validation.existing:
            lines.append(f"Warning: already in the current configuration: {problem}")
    return "".join(line + "\n" for line in lines)


def render_effective(effective: Any, fmt: str = "yaml") -> str:
    """`show-config --effective MEMBER`: key, value, layer (a ctl.services.edit_config.EffectiveConfig)."""
    if fmt == "json":
        return json.dumps({"member": effective.member, "layers": list(effective.layers), "note": effective.note,
                           "values": [{"key": v.key, "value": v.value, "source": v.source}
                                      for v in effective.values]}) + "\n"
    rows = [(v.key, json.dumps(v.value) if not isinstance(v.value, str) else v.value, v.source)
            for v in effective.values]
    kw = max((len(r[0]) for r in rows), default=0)
    vw = max((len(r[1]) for r in rows), default=0)
    out = [f"# effective configuration of {effective.member}; layers known: {', '.join(effective.layers)}"]
    if effective.note:
        out.append(f"# note: {effective.note}")
    out += [f"{k.ljust(kw)}  {v.ljust(vw)}  {s}" for k, v, s in rows]
    return "\n".join(out) + "\n"
