"""The package's layout holds: floors import only downward, no module imports itself round a circle,
commands never import steps, no module grows past 400 lines (CONTRIBUTING.md, issue 13), and no
backend or emulator module names a step: what a runner needs to know about a step is on its
StepSpec (issue 21).

Read from the source with `ast` (imports inside functions count too), so a lazy import cannot hide
an upward arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "slmforge"
# Top floor first. A module may import from its own package and from any package below its own.
FLOORS = ["__main__", "api", "commands", "cli", "backends", "emulator", "recipe", "steps", "training", "models", "data",
          "registry", "contract", "resources", "secrets", "errors", "__init__"]
MAX_LINES = 400
RUNNERS = ("backends", "emulator")  # floors that read steps' facts from steps.catalog, never a step's name


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = SRC) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The slmforge modules `path` imports (a `from pkg import name` of a submodule counts as that module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "slmforge")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "slmforge":
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
    return {m for m in found if m in known}


def _floor(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if _floor(a) != _floor(b) and FLOORS.index(_floor(a)) > FLOORS.index(_floor(b)))


def circles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        return False

    return sorted(f"{a} <-> {b}" for a, targets in graph.items() for b in targets if reaches(b, a))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_package_has_a_floor(graph):
    assert sorted({_floor(m) for m in graph} - set(FLOORS)) == []


def test_imports_only_run_downward(graph):
    assert upward_imports(graph) == []


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_commands_never_import_steps(graph):
    assert sorted(f"{a} -> {b}" for a, targets in graph.items() if _floor(a) == "commands"
                  for b in targets if _floor(b) == "steps") == []


def test_no_module_over_the_line_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def steps_named(root: Path = SRC) -> list[str]:
    """Where a runner module writes a step's name as a string (docstrings aside): `module:line 'name'`."""
    from slmforge.steps.catalog import STEPS

    found = []
    for name, path in _modules(root).items():
        if _floor(name) not in RUNNERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        found += [f"{name}:{node.lineno} '{node.value}'" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in STEPS
                  and id(node) not in docstrings]
    return sorted(found)


def test_runners_never_name_a_step():
    assert steps_named() == []


def test_the_step_name_check_sees_a_planted_name(tmp_path):
    """The check above can fail: in a copy of the tree, the local runner special-cases `register` again."""
    import shutil

    copy = tmp_path / "slmforge"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    runner = copy / "backends" / "local" / "runner.py"
    runner.write_text(runner.read_text() + '\n\ndef _planted(step):\n    return step.component == "register"\n')
    lines = len(runner.read_text().splitlines())
    assert steps_named(copy) == [f"slmforge.backends.local.runner:{lines} 'register'"]


def test_the_checks_see_a_planted_upward_import_and_circle(tmp_path):
    """The checks above can fail: in a copy of the tree, one lazy import from errors.py up to
    commands is both an upward import and a circle (commands imports errors)."""
    import shutil

    copy = tmp_path / "slmforge"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    errors = copy / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from slmforge.commands import positive_int\n")
    planted = import_graph(copy)
    assert "slmforge.errors -> slmforge.commands" in upward_imports(planted)
    assert "slmforge.commands <-> slmforge.errors" in circles(planted)
