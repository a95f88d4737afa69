"""completions/ and man/ match the CLI they were generated from; version, --color and NO_COLOR behave as documented.

The generators render into memory here and are compared with the committed files; a difference names the
command that regenerates them. Linting the pages and driving real shells is in tests/integration/test_docs.py.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
import re
import sys
from types import ModuleType

import pytest
from typer.testing import CliRunner

import ctl
from ctl.cli.app import app
from ctl.cli.tree import command_tree
from ctl.config import build
from ctl.errors import ExitCode
from tests.support.patroni_dumps import load_dump

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSI = re.compile(r"\x1b\[")


def _script(name: str) -> ModuleType:
    path = os.path.join(REPO, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_hactl_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _assert_fresh(directory: str, generated: dict[str, str], command: str) -> None:
    stale = []
    for name, text in generated.items():
        path = os.path.join(REPO, directory, name)
        try:
            with open(path, encoding="utf-8") as fh:
                committed = fh.read()
        except FileNotFoundError:
            stale.append(f"{directory}/{name} is missing")
            continue
        if committed != text:
            diff = "".join(list(difflib.unified_diff(committed.splitlines(True), text.splitlines(True),
                                                     f"{directory}/{name} (committed)", "(generated)"))[:30])
            stale.append(f"{directory}/{name} is stale:\n{diff}")
    assert not stale, f"regenerate with `{command}` and commit the result:\n" + "\n".join(stale)


@pytest.fixture(scope="module")
def tree():
    return command_tree()


def test_completions_are_fresh(tree) -> None:
    gen = _script("gen_completions")
    _assert_fresh("completions", gen.render_all(tree), "make completions")


def test_man_pages_are_fresh(tree) -> None:
    gen = _script("gen_man")
    pages = gen.render_all(tree)
    _assert_fresh("man", pages, "make man")
    extra = {n for n in os.listdir(os.path.join(REPO, "man")) if n.endswith(".1")} - set(pages)
    assert not extra, f"man/ holds pages of commands that no longer exist: {sorted(extra)}; run `make man`"


def _help_commands() -> list[str]:
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0
    section = r.stdout.split("\nCommands:\n", 1)[1]
    return re.findall(r"^  (\S+)", section, re.M)


def test_man_page_lists_every_command_hactl_help_lists() -> None:
    with open(os.path.join(REPO, "man", "hactl.1"), encoding="utf-8") as fh:
        page = fh.read()
    commands = _help_commands()
    assert "list" in commands and "switchover" in commands
    for name in commands:
        roff = name.replace("-", "\\-")
        assert f'.SS "{roff}"' in page, f"hactl.1 has no section for {name}"
        assert f".B hactl {roff}" in page, f"hactl.1 has no synopsis line for {name}"
        assert os.path.exists(os.path.join(REPO, "man", f"hactl-{name}.1")), f"no man/hactl-{name}.1"
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "CONFIGURATION", "ENVIRONMENT", "EXIT STATUS", "FILES",
                    "EXAMPLES", '"SEE ALSO"' if '.SH "SEE ALSO"' in page else "SEE ALSO"):
        assert f"\n.SH {section}\n" in page, section


def test_man_page_exit_status_is_the_full_table() -> None:
    with open(os.path.join(REPO, "man", "hactl.1"), encoding="utf-8") as fh:
        section = fh.read().split(".SH EXIT STATUS\n", 1)[1].split("\n.SH ", 1)[0]
    assert [int(c) for c in re.findall(r"^\.B (\d+)$", section, re.M)] == [int(c) for c in ExitCode]


def test_every_command_and_option_is_in_the_bash_completion(tree) -> None:
    with open(os.path.join(REPO, "completions", "hactl.bash"), encoding="utf-8") as fh:
        script = fh.read()
    top = re.search(r"^    \['hactl'\]='([^']*)'", script, re.M)
    assert top and top.group(1).split() == _help_commands()
    for cmd in tree.walk():
        for opt in cmd.options:
            for name in opt.names:
                assert re.search(rf"^    \['{re.escape(cmd.name)}'\]='[^']*(?<![^\s']){re.escape(name)}(?![^\s'])", script,
                                 re.M), f"{cmd.name} {name}"


def test_option_values_complete_to_what_the_commands_accept(tree) -> None:
    by_name = {c.name: c for c in tree.walk()}

    def values(command: str, option: str) -> tuple[str, ...]:
        opt = next(o for o in by_name[command].options if option in o.names)
        assert opt.value is not None and opt.value.kind == "choice"
        return opt.value.choices

    assert values("hactl list", "--format") == ("pretty", "tsv", "json", "yaml", "yml")
    assert values("hactl show-config", "-f") == ("json", "yaml")
    assert values("hactl dsn", "--role") == ("leader", "primary", "standby-leader", "replica", "standby", "any")
    assert values("hactl", "--color") == ("auto", "always", "never")
    kinds = {a.metavar: a.value.kind for a in by_name["hactl version"].arguments}
    assert kinds == {"CLUSTER_NAME": "clusters", "MEMBER_NAME": "members"}
    assert next(o for o in by_name["hactl dsn"].options if "--member" in o.names).value.kind == "members"


def test_complete_command_is_hidden_and_quiet_without_a_dcs() -> None:
    assert "_complete" not in _help_commands()
    r = CliRunner().invoke(app, ["_complete", "members"], obj={"config": build({"scope": "demo"}, "t.yml")})
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    r = CliRunner().invoke(app, ["--dcs-url", "etcd3://127.0.0.1:1", "_complete", "clusters"])
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


# ------------------------------------------------------------------------------------------------ version


def test_version_agrees_with_the_package_metadata() -> None:
    installed = importlib.metadata.version("hactl")
    assert installed == ctl.__version__, "reinstall (pip install -e .): the metadata is older than ctl.__version__"
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"hactl version {installed}\n"
    r = CliRunner().invoke(app, ["version"])
    assert r.exit_code == 0 and r.stdout == f"hactl version {installed}\n"


# ------------------------------------------------------------------------------------------------ colour


class _FakeDcs:
    def __init__(self) -> None:
        from ctl.dcs.codec import parse_cluster

        kvs, revision = load_dump("dcs_sync_mode")
        self.cluster = parse_cluster("demo", "/service/demo/", kvs, revision)

    def get_cluster(self, namespace: str, scope: str):
        return self.cluster

    def list_clusters(self, namespace: str) -> list[str]:
        return ["demo"]

    def close(self) -> None:
        pass


def _list(args: list[str], env: dict[str, str | None]):
    config = build({"scope": "demo", "etcd3": {"hosts": ["127.0.0.1:2379"]}}, "test.yml")
    return CliRunner().invoke(app, args + ["list"], obj={"config": config, "dcs": _FakeDcs(), "rest": None},
                              env=env)


@pytest.mark.parametrize("args, env, coloured", [
    ([], {"NO_COLOR": None, "TERM": "xterm"}, False),  # not a terminal: plain
    ([], {"NO_COLOR": "1", "TERM": "xterm"}, False),
    (["--color", "never"], {"NO_COLOR": None, "TERM": "xterm"}, False),
    (["--color", "auto"], {"NO_COLOR": None, "TERM": "xterm"}, False),
    (["--color", "always"], {"NO_COLOR": None, "TERM": "xterm"}, True),
    (["--color", "always"], {"NO_COLOR": "1", "TERM": "xterm"}, True),  # the explicit option wins
])
def test_colour_follows_color_option_no_color_and_the_terminal(args, env, coloured) -> None:
    r = _list(args, env)
    assert r.exit_code == 0, r.stderr
    assert bool(ANSI.search(r.stdout)) is coloured
    assert "| node1" in ANSI.sub("", r.stdout) or "node1" in r.stdout


def test_color_mode_does_not_outlive_the_invocation() -> None:
    from ctl.cli.context import color_enabled

    class Tty:
        def isatty(self) -> bool:
            return False

    assert _list(["--color", "always"], {}).exit_code == 0
    assert color_enabled(Tty()) is False


def test_bad_color_value_is_a_usage_error() -> None:
    r = CliRunner().invoke(app, ["--color", "sometimes", "version"])
    assert r.exit_code == ExitCode.USAGE
    assert "'sometimes' is not one of 'auto', 'always', 'never'" in r.stderr


# ------------------------------------------------------------------------------------------------ README


def _readme_section(title: str) -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        return fh.read().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_command_overview_lists_every_command() -> None:
    rows = _readme_section("Commands")
    documented = set(re.findall(r"`([a-z][a-z-]*)(?: [^`]*)?`", rows))
    missing = [c for c in _help_commands() if c not in documented]
    assert not missing, f"README '## Commands' lacks {missing}"


def test_readme_troubleshooting_quotes_real_error_messages() -> None:
    """Each `Error: ...` the section quotes starts with words that a CtlError in ctl/ is raised with."""
    section = _readme_section("Troubleshooting")
    quoted = re.findall(r"`Error: ([a-z][^`'<.]*)", section)
    assert len(quoted) >= 4
    sources = []
    for root, _dirs, files in os.walk(os.path.join(REPO, "ctl")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8") as fh:
                    sources.append(fh.read())
    text = "\n".join(sources)
    for message in quoted:
        words = message.split(" ")[:3]
        assert " ".join(words) in text, f"README troubleshooting quotes {message!r}, which ctl/ never says"


def test_readme_install_commands_name_files_that_exist() -> None:
    for title in ("Shell completion", "Man page"):
        for path in re.findall(r"(?<![/\w])((?:completions|man)/[\w.*-]+)", _readme_section(title)):
            if "*" not in path and "COMMAND" not in path:
                assert os.path.exists(os.path.join(REPO, path)), path
    assert "make completions" in _readme_section("Shell completion")
    assert "make man" in _readme_section("Man page")


@pytest.mark.parametrize("command", [["list", "-e"], ["topology"], ["history"], ["show-config"], ["dsn"],
                                     ["version"], ["list", "nosuchcluster"], ["--help"], ["list", "--help"]])
@pytest.mark.parametrize("env", [{"NO_COLOR": "1", "TERM": "xterm"}, {"NO_COLOR": None, "TERM": "xterm"}])
def test_no_escape_codes_off_a_terminal(command, env) -> None:
    config = build({"scope": "demo", "etcd3": {"hosts": ["127.0.0.1:2379"]}}, "test.yml")
    r = CliRunner().invoke(app, command, obj={"config": config, "dcs": _FakeDcs(), "rest": None}, env=env)
    assert r.stdout or r.stderr
    assert not ANSI.search(r.stdout) and not ANSI.search(r.stderr), (command, r.stdout[:200])


# ------------------------------------------------------------------------------------------------ examples parse


def _example_commands() -> list[tuple[str, list[str]]]:
    """Every `hactl ...` line in the man page's EXAMPLES and in the README's sh blocks, as argv after `hactl`."""
    import shlex

    found = []
    with open(os.path.join(REPO, "man", "hactl.1"), encoding="utf-8") as fh:
        examples = fh.read().split(".SH EXAMPLES\n", 1)[1].split("\n.SH ", 1)[0]
    text = examples.replace("\\-", "-").replace("\\e\n", " ").replace("\\e", "\\")
    sources = [("man", text)]
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    sources += [("README", b.replace("\\\n", " ")) for b in re.findall(r"^```sh\n(.*?)^```", readme, re.M | re.S)]
    for where, block in sources:
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            words = shlex.split(line) if line else []
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # EDITOR=vim hactl ...
                words.pop(0)
            if words and os.path.basename(words[0]) == "hactl":
                found.append((where, words[1:words.index(">")] if ">" in words else words[1:]))
    return found


def test_every_hactl_example_parses() -> None:
    """Options and commands in the examples exist: the click parser accepts each line (nothing runs)."""
    from typer.main import get_command

    examples = _example_commands()
    assert len([w for w, _ in examples if w == "man"]) >= 6 and len([w for w, _ in examples if w == "README"]) >= 6
    root = get_command(app)
    for where, argv in examples:
        if "--help" in argv or "--version" in argv:  # they exit while parsing; test_install runs them
            continue
        ctx = root.make_context("hactl", list(argv))
        rest = [*ctx._protected_args, *ctx.args]
        name, cmd, rest = root.resolve_command(ctx, rest)
        assert cmd is not None, (where, argv)
        sub = cmd.make_context(name, rest, parent=ctx)
        if hasattr(cmd, "resolve_command") and [*sub._protected_args, *sub.args]:
            name2, cmd2, rest2 = cmd.resolve_command(sub, [*sub._protected_args, *sub.args])
            cmd2.make_context(name2, rest2, parent=sub)
