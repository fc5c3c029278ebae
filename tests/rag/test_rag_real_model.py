"""The embedded SmolLM2-135M-Instruct, served with the product-docs knowledge base, answers from a
document added after the fact (never trained on, never in the index when it was built)."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import ROOT, running

from tuneloop.rag.index import KnowledgeBase
from tuneloop.server import ServeOptions, build_app

EXAMPLE = ROOT / "examples" / "product_docs"
MODEL = "smollm2-135m-instruct"  # the embedded default model
SYSTEM = "You answer customer questions about our products in one sentence, using only the given context."


@pytest.mark.slow
def test_answers_come_from_a_document_added_later(tmp_path):
    knowledge = KnowledgeBase.build([EXAMPLE / "docs"], tmp_path / "kb")
    knowledge.add([EXAMPLE / "new_docs"])
    knowledge.save()
    app, _ = build_app(ServeOptions(base=MODEL, registry=f"sqlite:///{tmp_path / 'r.db'}", request_log="off",
                                    knowledge={MODEL: tmp_path / "kb"}, knowledge_k=2))
    with running(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        response = client.chat.completions.create(
            model=MODEL, max_tokens=40, temperature=0,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How long is the warranty on the Aurora K7 kettle?"}])
    assert "5-year" in response.choices[0].message.content
    assert response.model_extra["sources"][0]["doc_id"] == "aurora-kettle.md"
