"""Optional parts of tuneloop and the packages each needs (pyproject.toml's extras, the same names).

`make install` installs every extra. A plain `pip install tuneloop` trains, evaluates and registers;
serving, knowledge bases, the lm-eval regression check and sweeps need their extra, and say so in one line when
it is missing instead of failing with an ImportError deep inside a library.
"""

from __future__ import annotations

import importlib.util

from tuneloop.errors import TuneloopError

EXTRAS = {
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "rag": ("faiss", "bm25s", "pypdf"),
    "regression": ("lm_eval",),
    "sweep": ("optuna",),
    "tracking": ("mlflow", "wandb"),
}


def missing(extra: str) -> list[str]:
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, needed_for: str, instead: str = "") -> None:
    """Raise a TuneloopError naming the install command when a module of `extra` is not installed."""
    absent = missing(extra)
    if absent:
        raise TuneloopError(f"{needed_for} needs the '{extra}' extra ({', '.join(absent)} not installed): "
                            f"pip install 'tuneloop[{extra}]'" + (f", or {instead}" if instead else ""))
