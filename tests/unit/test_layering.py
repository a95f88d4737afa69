"""Imports run one way and never in a circle (STYLE: cli -> services -> {dcs, restclient} -> model; agent -> {ha, dcs,
pg} -> model; render -> model; nothing imports cli or agent). Parsed with ast; nothing is imported."""

from __future__ import annotations

import ast
import pathlib

CTL = pathlib.Path(__file__).resolve().parents[2] / "ctl"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in CTL.rglob("*.py"):
        name = ".".join(path.relative_to(CTL.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    """The ctl modules `path` imports at run time (TYPE_CHECKING blocks left out); `from pkg import mod` names mod."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], nested: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse, nested)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in MODULES)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
                found.update(subs)
                if len(subs) < len(node.names) and node.module in MODULES:
                    found.add(node.module)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not top_level_only:
                    visit(node.body, True)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []) or [], nested)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body, nested)

    visit(ast.parse(path.read_text()).body, False)
    return found


def _group(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return "render" if part.startswith("render") else part


def test_module_level_imports_have_no_cycle() -> None:
    graph = {m: _imports(p, top_level_only=True) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [module, dep]))
            if dep not in state:
                walk(dep, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])


# who may import a group: (group, importers allowed besides the group itself)
ALLOWED_IMPORTERS = {
    "cli": {"ctl.__main__"},
    "agent": {"ctl.cli.agent"},  # the `hactl agent` command runs it, importing it lazily
}
# groups that must not import these groups (anywhere in the module, lazily too)
FORBIDDEN = {
    "render": {"cli", "agent", "dcs", "pg", "restclient"},  # renders data it is given, never fetches
    "services": {"cli", "agent", "pg"},
    "dcs": {"cli", "agent", "services", "pg", "ha", "render", "restclient"},
    "restclient": {"cli", "agent", "services", "pg", "ha", "render", "dcs"},
    "pg": {"cli", "agent", "services", "ha", "render", "dcs", "restclient"},
    "model": {"cli", "agent", "services", "pg", "ha", "render", "dcs", "restclient"},
    "config": {"cli", "agent", "services", "pg", "ha", "render", "restclient"},
    "config_sources": {"cli", "agent", "services", "pg", "ha", "render", "restclient", "dcs", "config"},
}


def test_imports_run_one_way() -> None:
    problems = []
    for module, path in MODULES.items():
        mine = _group(module)
        for dep in _imports(path, top_level_only=False):
            theirs = _group(dep)
            if theirs == mine:
                continue
            if theirs in ALLOWED_IMPORTERS and module not in ALLOWED_IMPORTERS[theirs]:
                problems.append(f"{module} imports {dep}")
            if theirs in FORBIDDEN.get(mine, ()):
                problems.append(f"{module} imports {dep}")
    assert not problems, "\n".join(sorted(problems))


def test_the_checker_sees_lazy_and_from_imports() -> None:
    """The parser finds what these tests rely on (so that they cannot pass by finding nothing)."""
    assert "ctl.dcs.gateway" in _imports(MODULES["ctl.cli.context"], top_level_only=False)
    assert "ctl.dcs.gateway" not in _imports(MODULES["ctl.cli.context"], top_level_only=True)
    assert "ctl.agent.runner" in _imports(MODULES["ctl.cli.agent"], top_level_only=False)
    assert "ctl.render_table" in _imports(MODULES["ctl.render"], top_level_only=True)
    assert "ctl.pg.conf" in _imports(MODULES["ctl.pg.offline"], top_level_only=True)
