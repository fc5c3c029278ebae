"""Optional parts: a missing extra is one clear line naming the install command, and the core stages do not
import what only an extra provides (so a plain `pip install tuneloop` trains and evaluates)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tuneloop import extras
from tuneloop.errors import TuneloopError


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "serve", ("fastapi", "no_such_module_here"))
    with pytest.raises(TuneloopError, match=r"tuneloop serve needs the 'serve' extra \(no_such_module_here not installed\): "
                                            r"pip install 'tuneloop\[serve\]', or run it elsewhere"):
        extras.require("serve", "tuneloop serve", instead="run it elsewhere")
    extras.require("rag", "a knowledge base")  # installed here: no error


@pytest.mark.parametrize("module, absent", [
    ("tuneloop.train.trainer", ("fastapi", "faiss", "bm25s", "lm_eval", "uvicorn")),
    ("tuneloop.data.prepare", ("fastapi", "faiss", "lm_eval")),
    ("tuneloop.rag", ("faiss", "bm25s", "pypdf")),
    ("tuneloop.eval.evaluate", ("fastapi", "faiss", "lm_eval")),
])
def test_core_modules_do_not_import_extras(module, absent):
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing {module} imported {out}"
