"""The knowledge base through the stages: the CLI builds and updates it, the data stage puts its
passages into training prompts, the server answers with them and lists the sources, and evaluation
scores retrieval. Uses the shipped product-docs example."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, running
from tuneloop.cli import app
from tuneloop.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RagDataConfig, TaskConfig
from tuneloop.data.prepare import prepare
from tuneloop.eval.evaluate import evaluate
from tuneloop.rag.template import DEFAULT_TEMPLATE
from tuneloop.server import ServeOptions, build_app

EXAMPLE = ROOT / "examples" / "product_docs"


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    out = tmp_path_factory.mktemp("kb") / "kb"
    result = CliRunner().invoke(app, ["rag", "index", str(EXAMPLE / "docs"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["documents"] == 4
    return out


def cli(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_documents_are_added_and_removed_without_a_rebuild(kb, tmp_path):
    import shutil

    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    question = "How long is the warranty on the Aurora K7 kettle?"
    assert "aurora-kettle.md" not in [h["doc_id"] for h in cli("rag", "search", str(copy), question)["hits"]]
    assert cli("rag", "add", str(copy), str(EXAMPLE / "new_docs"))["added"] == ["aurora-kettle.md"]
    assert cli("rag", "search", str(copy), question, "--k", "1")["hits"][0]["doc_id"] == "aurora-kettle.md"
    assert cli("rag", "remove", str(copy), "aurora-kettle.md")["removed"] == ["aurora-kettle.md"]
    assert "aurora-kettle.md" not in [h["doc_id"] for h in cli("rag", "search", str(copy), question)["hits"]]


def test_training_prompts_get_the_passages_in_the_serving_template(kb, tmp_path):
    cfg = DataConfig(val_ratio=0.1, test_ratio=0.2, dedup={"near": False}, rag=RagDataConfig(index=kb, k=2))
    report = prepare([EXAMPLE / "questions.jsonl"], tmp_path / "data", cfg, TaskConfig())
    assert report["retrieval_augmented"] == report["splits"]
    rows = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    prompt = rows[0]["messages"][-2]["content"]
    assert prompt.startswith(DEFAULT_TEMPLATE.split("{context}")[0]) and "Question: " in prompt and "[2] (" in prompt
    found = sum(row["metadata"]["relevant"][0] in " ".join(row["metadata"]["sources"]) for row in rows)
    assert found / len(rows) >= 0.9  # the document holding the answer is among the 2 passages


def test_served_answers_list_their_sources(kb, tiny_model_dir, tmp_path):
    app_, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{tmp_path / 'r.db'}", request_log="off",
                                     knowledge={str(tiny_model_dir): kb}))
    with running(app_) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        ask = dict(model=str(tiny_model_dir), messages=[{"role": "user", "content": "How do I reset my Nimbus X2?"}], max_tokens=3)
        response = client.chat.completions.create(**ask)
        assert response.model_extra["sources"][0]["doc_id"] == "nimbus-x2-router.md"
        chunks = list(client.chat.completions.create(**ask, stream=True))
        assert [c.model_extra.get("sources") for c in chunks if c.model_extra.get("sources")][0][0]["doc_id"] == "nimbus-x2-router.md"
        plain = httpx.post(f"{url}/v1/completions", json={"model": str(tiny_model_dir), "prompt": "Hello", "max_tokens": 2}).json()
        assert "sources" not in plain  # completions take the prompt as it is


def test_evaluation_scores_retrieval(kb, tiny_model_dir, tmp_path):
    prepare([EXAMPLE / "questions.jsonl"], tmp_path / "data", DataConfig(val_ratio=0.1, test_ratio=0.2, dedup={"near": False}),
            TaskConfig())
    cfg = EvalConfig(systems=["base", "rag"], rag_index=kb, rag_k=2, max_new_tokens=4, regression=False, bootstrap=100)
    results = evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TaskConfig(), ObjectiveConfig(), tmp_path / "data", None, tmp_path / "eval")
    retrieval = results["retrieval"]
    assert retrieval["labelled_rows"] == results["n_test"] and retrieval["recall@2"] >= 0.9 and retrieval["mrr"] >= 0.8
    assert set(retrieval["groundedness"]) == {"base", "rag"}
