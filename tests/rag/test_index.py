"""The knowledge base on disk: build, save/load round trip, incremental add / replace / remove."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.rag.corpus import write_corpus
from tuneloop.errors import TuneloopError
from tuneloop.rag import KnowledgeBase
from tuneloop.rag.index import indexed_text

COUNTER = ("XR-9900 coffee grinder", "# XR-9900 coffee grinder\n\nThe XR-9900 burr grinder has forty grind settings, "
           "from espresso fine to French press coarse.\n\n## Cleaning\n\nBrush the burrs weekly; never wash them with water.\n")


def top_ids(kb: KnowledgeBase, query: str, mode: str = "hybrid", k: int = 5) -> list[str]:
    return [h.chunk.id for h in kb.search(query, k=k, mode=mode)]


@pytest.fixture
def docs(tmp_path):
    return write_corpus(tmp_path / "docs")


@pytest.fixture
def built(tmp_path, docs, counting_embed) -> KnowledgeBase:
    return KnowledgeBase.build([docs], tmp_path / "kb", max_words=60, overlap=15, embed=counting_embed)


def test_build_writes_chunks_vectors_and_a_manifest(built, docs, tmp_path):
    out = tmp_path / "kb"
    rows = [json.loads(line) for line in (out / "chunks.jsonl").read_text().splitlines()]
    vectors = np.load(out / "vectors.npy")
    assert len(rows) == len(vectors) == len(built) > 12
    assert vectors.dtype == np.float32 and vectors.shape[1] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "rag" and manifest["config"]["max_words"] == 60 and manifest["config"]["overlap"] == 15
    assert manifest["embedder"] == "all-MiniLM-L6-v2" and manifest["dim"] == 384 and manifest["chunks"] == len(rows)
    router = next(d for d in manifest["documents"] if d["id"] == "router.md")
    assert router["chunks"] == sum(r["doc_id"] == "router.md" for r in rows) and len(router["sha256"]) == 64
    assert {d["id"] for d in manifest["documents"]} == {d["id"] for d in built.documents()}


def test_save_load_round_trip_gives_the_same_answers(built, tmp_path, counting_embed):
    loaded = KnowledgeBase.load(tmp_path / "kb", embed=counting_embed)
    assert len(loaded) == len(built) and loaded.documents() == built.documents()
    for query in ("E-1042", "How do insects tell hive-mates where flowers are?", "tapering"):
        before, after = built.search(query, k=4), loaded.search(query, k=4)
        assert [h.chunk for h in before] == [h.chunk for h in after]
        assert [h.score for h in before] == pytest.approx([h.score for h in after])


def test_load_refuses_what_is_not_a_knowledge_base(tmp_path, built):
    with pytest.raises(TuneloopError, match="not a knowledge base"):
        KnowledgeBase.load(tmp_path / "docs")
    with pytest.raises(TuneloopError, match="not a knowledge base"):
        KnowledgeBase.load(tmp_path / "nowhere")
    with open(tmp_path / "kb" / "chunks.jsonl", "a") as handle:
        handle.write(json.dumps({"vid": 999, "id": "x::0", "doc_id": "x", "source": "x", "title": None, "text": "x"}) + "\n")
    with pytest.raises(TuneloopError, match="chunks.jsonl: does not match manifest.json"):
        KnowledgeBase.load(tmp_path / "kb")
    with pytest.raises(TuneloopError, match="not a knowledge base"):
        KnowledgeBase.build([tmp_path / "docs"], tmp_path / "docs")  # never writes into a folder of other files


def test_add_embeds_only_the_new_chunks_and_finds_them(built, tmp_path, docs, counting_embed):
    assert top_ids(built, "XR-9900 grind settings")[0] != "grinder.md::0"
    (docs / "grinder.md").write_text(COUNTER[1])
    before = [d["id"] for d in built.documents()]
    counting_embed.calls.clear()
    report = built.add([docs])  # the whole folder again: only the new file is new
    assert report["added"] == ["grinder.md"] and report["replaced"] == [] and sorted(report["unchanged"]) == before
    new = [c for c in built._chunks.values() if c.doc_id == "grinder.md"]
    assert report["chunks_added"] == len(new) == 2
    assert counting_embed.calls == [[indexed_text(c) for c in new]]  # one call, with nothing but the new chunks
    assert top_ids(built, "XR-9900 grind settings")[0] == "grinder.md::0"
    built.save()
    reloaded = KnowledgeBase.load(tmp_path / "kb")
    assert top_ids(reloaded, "how often should grinder burrs be brushed")[0] == "grinder.md::1"
    assert "grinder.md" in {d["id"] for d in reloaded.documents()}


def test_adding_unchanged_documents_embeds_nothing(built, docs, counting_embed):
    counting_embed.calls.clear()
    size = len(built)
    report = built.add([docs / "router.md"])
    assert report["unchanged"] == ["router.md"] and report["chunks_added"] == 0
    assert counting_embed.calls == [] and len(built) == size


def test_a_changed_document_is_replaced(built, docs, tmp_path):
    assert top_ids(built, "XR-4400 price", mode="bm25")[0] == "router.md::0"
    (docs / "router.md").write_text("# XR-4400 router\n\nThe XR-4400 now costs 99 euros after the spring price cut.\n")
    size, old_chunks = len(built), next(d["chunks"] for d in built.documents() if d["id"] == "router.md")
    report = built.add([docs / "router.md"])
    assert report["replaced"] == ["router.md"] and report["chunks_removed"] == old_chunks and report["chunks_added"] == 1
    assert len(built) == size - old_chunks + 1 == built._index.ntotal
    texts = [h.chunk.text for h in built.search("XR-4400", k=len(built), mode="bm25")]
    assert any("99 euros" in t for t in texts) and not any("129 euros" in t or "recessed button" in t for t in texts)
    built.save()
    reloaded = KnowledgeBase.load(tmp_path / "kb")
    assert "99 euros" in reloaded.search("XR-4400 price", k=1)[0].chunk.text


def test_remove_by_id_and_by_source(built, docs, tmp_path):
    size = len(built)
    report = built.remove(["bees.md", str(docs / "support.jsonl"), "nothing.md"])
    assert report["removed"] == ["bees.md", "support.jsonl#password", "support.jsonl#shipping"]
    assert report["not_found"] == ["nothing.md"] and len(built) == size - report["chunks_removed"] == built._index.ntotal
    for mode in ("hybrid", "dense", "bm25"):
        for query in ("waggle dance nectar", "forgot password reset link"):
            ids = top_ids(built, query, mode=mode, k=len(built))
            assert not any(i.startswith(("bees.md", "support.jsonl")) for i in ids)
    built.save()
    reloaded = KnowledgeBase.load(tmp_path / "kb")
    assert {d["id"] for d in reloaded.documents()}.isdisjoint({"bees.md", "support.jsonl#password"})
    assert len(reloaded) == len(built)
    # ids stay unique after removal: a re-added document gets fresh vector ids
    reloaded.add([docs / "bees.md"])
    assert top_ids(reloaded, "waggle dance nectar")[0] == "bees.md::0"


def test_search_arguments_are_checked(built):
    with pytest.raises(TuneloopError, match="unknown retrieval mode"):
        built.search("x", mode="sparse")
    with pytest.raises(TuneloopError, match="k and candidates"):
        built.search("x", k=0)
    assert built.search("   ") == []
    assert len(built.search("router", k=100)) <= len(built)


def test_a_failed_embedding_leaves_the_knowledge_base_as_it_was(built, docs):
    (docs / "router.md").write_text("# XR-4400 router\n\nNew text.\n")
    before = (len(built), built.documents())
    built._embed = lambda texts: (_ for _ in ()).throw(RuntimeError("embedder down"))
    with pytest.raises(RuntimeError, match="embedder down"):
        built.add([docs / "router.md"])
    assert (len(built), built.documents()) == before and built._index.ntotal == before[0]


def test_remove_everything_under_a_directory(built, docs):
    (docs / "more").mkdir()
    (docs / "more" / "grinder.md").write_text("# Grinder\n\nBurr grinders crush coffee beans evenly.\n")
    built.add([docs / "more"])
    assert "grinder.md" in {d["id"] for d in built.documents()}
    assert built.remove(str(docs / "more"))["removed"] == ["grinder.md"]
    assert "grinder.md" not in {d["id"] for d in built.documents()}
