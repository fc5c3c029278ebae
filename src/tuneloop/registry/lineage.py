"""Register a trained run: read its manifests (train -> data, eval) and record the lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.artifacts import read_manifest
from tuneloop.registry.store import Registry


def register_run(registry: Registry, name: str, train_dir: Path, eval_dir: Path | None = None, note: str = "") -> dict[str, Any]:
    train = read_manifest(train_dir)
    evaluation = read_manifest(eval_dir)["summary"] if eval_dir else {}
    # A hosted fine-tune (train.backend: openai-compatible) is a version of kind remote: served by proxy.
    method = "remote" if train["config"].get("backend") == "openai-compatible" else train["config"]["method"]
    return registry.register(
        name, train_dir, base_model=train["model"]["name"], method=method,
        data_hash=train["inputs"]["train"]["sha256"], train_config=train["config"],
        eval_results=evaluation, task=train.get("task") or {}, note=note,
    )
