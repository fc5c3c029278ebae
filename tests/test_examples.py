"""Every shipped example config is valid, and runs end to end with its model swapped for the tiny one."""

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tuneloop.config import load_config
from tuneloop.pipelines.run import run_pipeline

CONFIGS = sorted((ROOT / "examples").rglob("*.yaml"))


def test_there_are_examples():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_config_runs(path: Path, tmp_path, tiny_model_dir):
    # The regression checks have their own tests; here they would only add minutes.
    overrides = {"model.name": str(tiny_model_dir), "train.max_steps": 2, "eval.limit": 4, "eval.max_new_tokens": 4,
                 "eval.regression": False}
    if load_config(path).eval.rag_index:  # its knowledge base is built from docs/ beside the config
        from tuneloop.rag.index import KnowledgeBase

        KnowledgeBase.build([path.parent / "docs"], tmp_path / "kb")
        overrides |= {"eval.rag_index": str(tmp_path / "kb"), "data.rag.index": str(tmp_path / "kb")}
    cfg = load_config(path, overrides)
    assert all(p.is_file() for p in cfg.data.inputs)
    result = run_pipeline(cfg, tmp_path / "run")
    assert set(result["finetuned"]) >= {gate.split("@")[0].split(":")[0].strip() for gate in cfg.objective.gates}
