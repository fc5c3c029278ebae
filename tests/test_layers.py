"""The package's three levels, checked on the source: stages side by side, compositions above, shared pieces
below (shared/DESIGN.md, "Architecture"), and no import cycle between files.

Every import counts: module level, inside functions (lazy imports) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tuneloop"
STAGES = {"data", "train", "eval", "registry", "serve", "monitor", "jobs"}
COMPOSITIONS = {"server", "pipelines", "sweep", "cli", "dashboard"}  # they wire stages together; nothing below imports them
LIBRARIES = {"models", "rag", "graders", "safety", "providers"}  # packages on the ground that say so in their docstring
# (importer stage, imported stage) -> why it is allowed. At most two, each with a reason.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """The tuneloop modules `path` imports, each resolved to a file of the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if not name.startswith("tuneloop"):
                continue
            while name not in MODULES:  # `from pkg import function` names the package's module
                name = name.rsplit(".", 1)[0]
            found.add(name)
    return found


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def level_of(module: str) -> tuple[str, str]:
    """(level, top-level name): stage, composition or ground."""
    top = module.split(".")[1] if "." in module else ""
    if top in STAGES:
        return "stage", top
    if top in COMPOSITIONS:
        return "composition", top
    return "ground", top


def test_no_stage_imports_another_and_nothing_below_imports_upward():
    wrong = []
    for module, targets in GRAPH.items():
        level, top = level_of(module)
        for target in targets:
            target_level, target_top = level_of(target)
            if target_top == top:
                continue
            if level == "stage" and target_level == "stage" and (top, target_top) not in EXCEPTIONS:
                wrong.append(f"{module} -> {target}: stage '{top}' imports stage '{target_top}'")
            elif level != "composition" and target_level == "composition":
                wrong.append(f"{module} -> {target}: {level} imports the composition '{target_top}'")
            elif level == "ground" and target_level == "stage":
                wrong.append(f"{module} -> {target}: a shared piece imports the stage '{target_top}'")
    assert not wrong, "\n".join(wrong)


def test_exceptions_are_few_and_still_needed():
    assert len(EXCEPTIONS) <= 2 and all(reason.strip() for reason in EXCEPTIONS.values())
    used = {(level_of(m)[1], level_of(t)[1]) for m, targets in GRAPH.items() for t in targets}
    assert set(EXCEPTIONS) <= used, "an exception that no import needs any more: remove it"


def test_no_import_cycle_between_files():
    cycles = _strongly_connected([name for name in GRAPH], lambda name: GRAPH[name] - {name})
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_libraries_say_any_stage_may_use_them(library):
    doc = ast.get_docstring(ast.parse((PACKAGE / library / "__init__.py").read_text())) or ""
    assert "any stage" in doc, f"tuneloop/{library}/__init__.py should say it is a library any stage may use"


def test_every_module_says_what_it_is_for():
    missing = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))
               and "migrations.versions" not in name]
    assert not missing, f"modules without a docstring: {missing}"


def test_the_checker_sees_a_violation(tmp_path):
    """The check itself works: a planted stage-to-stage import is found and resolved to its file."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from tuneloop.serve.catalog import Catalog\n    import tuneloop.registry.store\n")
    assert imported(planted) == {"tuneloop.serve.catalog", "tuneloop.registry.store"}
    assert _strongly_connected(["a", "b", "c"], {"a": {"b"}, "b": {"a"}, "c": {"a"}}.get) == [{"a", "b"}]


def _strongly_connected(nodes, edges) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other (size > 1)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in nodes:
        if node not in index:
            visit(node)
    return groups
