"""The visible hactl command tree as plain data, for the generators of completions/ and man/ (and their tests).

scripts/gen_completions.py and scripts/gen_man.py render it; nothing imports this module when hactl runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import typer

# Values of options that the CLI takes as plain strings and validates itself; an option offers those of these
# words that its help text names (so `show-config -f` offers yaml/yml/json and `list -f` all five).
_VOCABULARY = {
    "--format": ("pretty", "tsv", "csv", "json", "yaml", "yml"),
    "--role": ("leader", "primary", "standby-leader", "replica", "standby", "any"),
}
_MEMBER_WORDS = ("member", "candidate", "leader", "primary")
_TYPE_METAVARS = {"str": "TEXT", "text": "TEXT", "int": "INT", "integer": "INT", "int range": "INT", "float": "NUM",
                  "float range": "NUM", "path": "PATH", "filename": "FILE"}


@dataclass(frozen=True)
class Value:
    """What an option value or a positional argument completes to.

    kind: "choice" (the fixed `choices`), "clusters", "members" (from etcd), "file", "dir", or "any" (nothing).
    For clusters and members, `choices` are words offered as well (flush's `restart|switchover` after its members).
    """

    kind: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptionSpec:
    names: tuple[str, ...]  # long and short spellings, as click has them (e.g. ("-f", "--format"))
    help: str
    metavar: str | None  # None for a flag
    value: Value | None  # None for a flag
    default: str | None = None
    envvar: str | None = None
    secondary: tuple[str, ...] = ()  # the --no-x spellings of a --x/--no-x flag
    required: bool = False


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    metavar: str
    value: Value
    variadic: bool
    required: bool


@dataclass(frozen=True)
class CommandSpec:
    path: tuple[str, ...]  # () for hactl itself, ("demo", "up") for `hactl demo up`
    help: str
    short_help: str
    usage: str  # what follows the command path in `--help`'s Usage line, e.g. "[OPTIONS] [CLUSTER_NAME]..."
    options: tuple[OptionSpec, ...]
    arguments: tuple[ArgumentSpec, ...]
    commands: tuple["CommandSpec", ...] = field(default=())

    @property
    def name(self) -> str:
        return " ".join(("hactl",) + self.path)

    def walk(self) -> list["CommandSpec"]:
        """This command and every subcommand below it, depth first in definition order."""
        found = [self]
        for sub in self.commands:
            found.extend(sub.walk())
        return found


def _words_in(text: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    named = tuple(w for w in vocabulary if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text))
    return named or vocabulary


def _value_of(param: Any, opts: tuple[str, ...] = ()) -> Value:
    ptype = param.type
    if getattr(ptype, "name", None) == "choice":  # typer's TyperChoice (enums, click_type=TyperChoice(...))
        return Value("choice", tuple(str(getattr(c, "value", c)) for c in ptype.choices))
    for opt in opts:
        if opt in _VOCABULARY:
            return Value("choice", _words_in(getattr(param, "help", None) or "", _VOCABULARY[opt]))
    name = (param.name or "").lower()
    metavar = (getattr(param, "metavar", None) or "").lower()
    if hasattr(ptype, "file_okay"):  # typer's TyperPath
        return Value("dir" if not ptype.file_okay else "file")
    # A metavar like `[MEMBER_NAMES]... {restart|switchover}` names words that may follow the names.
    extra = tuple(w for group in re.findall(r"\{([\w|-]+)\}", metavar) if "|" in group for w in group.split("|"))
    if "cluster" in name or "cluster" in metavar:
        return Value("clusters", extra)
    if any(w in name or w in metavar for w in _MEMBER_WORDS):
        return Value("members", extra)
    if name in ("dir", "directory") or metavar in ("dir", "directory"):
        return Value("dir")
    if "file" in name or metavar in ("path", "file"):
        return Value("file")
    return Value("any")


def _default_text(param: Any) -> str | None:
    if param.is_flag or param.default is None or param.show_default is False:
        return None
    default = param.default
    if callable(default):
        return None
    if isinstance(default, str) and not default.isprintable():
        return repr(default)
    if isinstance(default, (list, tuple)):
        return " ".join(str(d) for d in default) or None
    return str(default)


def _spec(cmd: Any, path: tuple[str, ...], ctx: Any) -> CommandSpec:
    from typer._click import Context
    from typer.core import TyperArgument, TyperGroup, TyperOption

    options: list[OptionSpec] = []
    arguments: list[ArgumentSpec] = []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if isinstance(param, TyperOption):
            flag = param.is_flag or param.count
            # Short spellings first, long ones in declared order; click builds the help option's list in an
            # order that depends on which context created it first, so the tree would not be stable without this.
            names = tuple(sorted(param.opts, key=lambda n: n.startswith("--")))
            options.append(OptionSpec(
                names=names, help=param.help or "",
                metavar=None if flag else (param.metavar or _TYPE_METAVARS.get(param.type.name, "VALUE")),
                value=None if flag else _value_of(param, names),
                default=None if flag else _default_text(param),
                envvar=param.envvar if isinstance(param.envvar, str) and param.show_envvar else None,
                secondary=tuple(param.secondary_opts), required=bool(param.required)))
        elif isinstance(param, TyperArgument):
            metavar = re.sub(r"[\[\]]|\.\.\.", "", param.metavar or param.name.upper()).strip()
            metavar = metavar.upper() if re.fullmatch(r"[a-z_]+", metavar) else metavar
            arguments.append(ArgumentSpec(name=param.name, metavar=metavar, value=_value_of(param),
                                          variadic=param.nargs == -1, required=param.required))
    subs: list[CommandSpec] = []
    if isinstance(cmd, TyperGroup):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            subs.append(_spec(sub, path + (name,), Context(sub, parent=ctx, info_name=name, **sub.context_settings)))
    help_text = (cmd.help or "").strip()
    return CommandSpec(path=path, help=help_text, short_help=cmd.get_short_help_str(limit=200),
                       usage=" ".join(cmd.collect_usage_pieces(ctx)),
                       options=tuple(options), arguments=tuple(arguments), commands=tuple(subs))


def command_tree(app: Optional[typer.Typer] = None) -> CommandSpec:
    """The visible command tree of hactl as plain data (hidden commands and options left out)."""
    from typer._click import Context

    if app is None:
        from ctl.cli.app import app as hactl_app

        app = hactl_app
    root = typer.main.get_command(app)
    return _spec(root, (), Context(root, info_name="hactl", **root.context_settings))
