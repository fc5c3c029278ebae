"""Run folders: tuneloop/layout.py is the only module that spells the names inside a stage's output folder,
and the classes there describe what the stages really write."""

from __future__ import annotations

import ast
from pathlib import Path

from tuneloop import layout

PACKAGE = Path(layout.__file__).resolve().parent


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constants that are docstrings (or other bare string statements): prose, not names."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def _layout_names() -> tuple[set[str], set[str]]:
    """(names of files and folders, constant parts of the f-strings that build names) in layout.py: the
    names given to its `_at`/`_in` helpers or joined onto a folder with `/`."""
    tree = ast.parse(Path(layout.__file__).read_text())
    joined, pieces = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_at", "_in"):
            joined.add(node.args[0].value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                joined.add(right.value)
            elif isinstance(right, ast.JoinedStr):
                pieces |= {v.value for v in right.values if isinstance(v, ast.Constant) and len(v.value) > 1}
    return joined, pieces


JOINED, PIECES = _layout_names()
PIECES -= {".tmp"}  # every atomic write (artifacts.write_json, ...) names its temporary file .NAME.tmp
FILE_NAMES = {name for name in JOINED if "." in name}


def offences(source: str) -> list[str]:
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in JOINED:
            found.append(f"line {node.lineno}: / {node.right.value!r}")
        elif isinstance(node, ast.Constant) and id(node) not in prose and node.value in FILE_NAMES:
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            if any(part in PIECES or part.startswith("step-") for part in parts):
                found.append(f"line {node.lineno}: an f-string building a run-folder name ({parts})")
    return found


def test_no_module_but_layout_spells_a_run_folder_name():
    wrong = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "layout.py" and path.parent == PACKAGE:
            continue
        if found := offences(path.read_text()):
            wrong[str(path.relative_to(PACKAGE))] = found
    assert not wrong, "spell these through tuneloop.layout: " + repr(wrong)


def test_the_check_finds_what_it_should():
    assert {"metrics.jsonl", "state.pt", "checkpoints", "adapter", "results.json"} <= JOINED | FILE_NAMES
    assert offences('run = out / "checkpoints"') and offences('x = "metrics.jsonl"') and offences('p = f"{split}.jsonl"')
    assert offences('name = f"step-{n:07d}"')
    assert not offences('"""Writes metrics.jsonl."""\nkey = "model"\nbody = {"model": "adapter"}')


def test_checkpoint_names_round_trip(tmp_path):
    checkpoints = layout.TrainDir(tmp_path).checkpoints
    at = checkpoints.at(42)
    assert at.step == 42 and checkpoints.temporary(42).path.name.startswith(".")
    at.weights.mkdir(parents=True)
    assert checkpoints.all() == [at] and checkpoints.complete() == []
    at.state.write_text("{}")
    (checkpoints.root / checkpoints.temporary(43).path.name).mkdir()  # half-written: never listed
    assert checkpoints.complete() == [at]
