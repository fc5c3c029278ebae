"""The knowledge base: chunks of the team's documents, searchable by meaning and by keyword, kept on disk.

A knowledge-base directory holds
- chunks.jsonl   one row per chunk: {vid, id, doc_id, source, title, text}, row i <-> vectors.npy row i;
- vectors.npy    float32 MiniLM embeddings (L2-normalised), a standard format any tool can read;
- manifest.json  stage "rag": chunking parameters, embedder, every document with its content sha256
                 and chunk count, and the sha256 of the two files above (checked on load).
In memory the vectors live in a faiss IndexIDMap over IndexFlatIP keyed by each chunk's stable int64
`vid`, so removing a document is `remove_ids` and adding one embeds only its new chunks. BM25 is not
stored: it is rebuilt from the chunk texts when first needed (see `lexical.py` for why).

`add` and `remove` change the knowledge base in memory; `save()` persists it. Files are written
first and the manifest last, each file atomically; a save interrupted between them leaves hashes
that no longer match, which `load` reports instead of serving a half-written index.
Not safe for concurrent writers; searches may run while nothing is being added or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuneloop.artifacts import MANIFEST, read_jsonl, read_manifest, sha256_file, write_jsonl, write_manifest
from tuneloop.errors import TuneloopError
from tuneloop.extras import require
from tuneloop.rag.chunking import Chunk, chunk
from tuneloop.rag.lexical import BM25
from tuneloop.rag.loaders import Document, load_documents, supported

Embed = Callable[[list[str]], np.ndarray]
Mode = Literal["hybrid", "dense", "bm25"]

STAGE = "rag"
EMBEDDER = "all-MiniLM-L6-v2"
CHUNKS, VECTORS = "chunks.jsonl", "vectors.npy"
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): damps the weight of the very top ranks


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # hybrid: fused RRF score; dense: cosine similarity; bm25: BM25 score
    dense_rank: int | None = None  # 1-based rank among the dense candidates, None if not among them
    bm25_rank: int | None = None


class KnowledgeBase:
    """Documents chunked, embedded and indexed in one directory; see the module docstring."""

    def __init__(self, path: Path, max_words: int = 120, overlap: int = 30, root: Path | None = None,
                 embed: Embed | None = None) -> None:
        self.path = Path(path)
        self.max_words, self.overlap = max_words, overlap
        self.root = Path(root).resolve() if root else None  # ids of documents added later are relative to it
        self._embed = embed or _default_embed
        self._flat: faiss.IndexFlatIP | None = None  # created at the first vectors, when their width is known
        self._index: faiss.IndexIDMap | None = None
        self._chunks: dict[int, Chunk] = {}
        self._docs: dict[str, dict[str, Any]] = {}
        self._next_vid = 0
        self._bm25: tuple[BM25, list[int]] | None = None

    # --- create, open, persist ---------------------------------------------------------------------
    @classmethod
    def build(cls, paths: list[Path], out: Path, max_words: int = 120, overlap: int = 30, *,
              root: Path | None = None, embed: Embed | None = None) -> KnowledgeBase:
        """Load, chunk and embed every document in `paths`, and save the knowledge base to `out`.

        `root`, when given, is what document ids are relative to, now and in later `add` calls; without
        it a file's id is relative to the directory it was found under (its own folder if passed alone).
        """
        out = Path(out)
        if out.is_dir() and any(out.iterdir()) and not _is_kb(out):
            raise TuneloopError(f"{out}: directory exists and is not a knowledge base; choose an empty or new directory")
        kb = cls(out, max_words, overlap, root, embed)
        if not kb.add(paths)["added"]:
            raise TuneloopError(f"no documents found in {', '.join(map(str, paths))} (supported: {supported()})")
        kb.save()
        return kb

    @classmethod
    def load(cls, path: Path, *, embed: Embed | None = None) -> KnowledgeBase:
        """Open a saved knowledge base; `embed` must be the embedder it was built with (MiniLM by default)."""
        path = Path(path)
        if not _is_kb(path):
            raise TuneloopError(f"{path}: not a knowledge base (no {MANIFEST} of stage '{STAGE}'); build one first")
        manifest = read_manifest(path)
        for name in (CHUNKS, VECTORS):
            file = path / name
            if not file.is_file():
                raise TuneloopError(f"{file}: missing; the knowledge base is incomplete, rebuild it")
            if sha256_file(file) != manifest["outputs"].get(name):
                raise TuneloopError(f"{file}: does not match {MANIFEST} (an interrupted save or a manual edit?); rebuild it")
        try:
            config = manifest["config"]
            kb = cls(path, config["max_words"], config["overlap"], config.get("root"), embed)
            rows = read_jsonl(path / CHUNKS)
            vectors = np.load(path / VECTORS, allow_pickle=False)
            if len(rows) != len(vectors):
                raise TuneloopError(f"{path}: {len(rows)} chunks but {len(vectors)} vectors; rebuild the knowledge base")
            vids = np.array([row.pop("vid") for row in rows], dtype=np.int64)
            kb._insert([Chunk(**row) for row in rows], vids, vectors)
            kb._docs = {doc["id"]: doc for doc in manifest["documents"]}
            kb._next_vid = max(int(manifest["next_vid"]), int(vids.max(initial=-1)) + 1)
        except (KeyError, TypeError, ValueError) as err:
            raise TuneloopError(f"{path}: the knowledge base files are malformed ({err!r}); rebuild it") from None
        return kb

    def save(self) -> Path:
        """Write the knowledge base to its directory (data files first, manifest last); returns the manifest."""
        started = time.time()
        self.path.mkdir(parents=True, exist_ok=True)
        if self._index is not None and self._index.ntotal:
            vids = _faiss().vector_to_array(self._index.id_map).astype(np.int64)
            vectors = self._flat.reconstruct_n(0, self._flat.ntotal)
        else:
            vids, vectors = np.zeros(0, dtype=np.int64), np.zeros((0, self.dim or 0), dtype=np.float32)
        write_jsonl(self.path / CHUNKS, [{"vid": int(v), **asdict(self._chunks[int(v)])} for v in vids])
        tmp = self.path / f".{VECTORS}.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
        os.replace(tmp, self.path / VECTORS)
        config = {"max_words": self.max_words, "overlap": self.overlap, "root": str(self.root) if self.root else None}
        extra = {"embedder": EMBEDDER if self._embed is _default_embed else getattr(self._embed, "__name__", "custom"),
                 "dim": self.dim, "chunks": len(self), "next_vid": self._next_vid, "documents": self.documents()}
        return write_manifest(self.path, STAGE, config, inputs={}, outputs=[self.path / CHUNKS, self.path / VECTORS],
                              started=started, extra=extra)

    # --- incremental updates -----------------------------------------------------------------------
    def add(self, paths: list[Path]) -> dict[str, Any]:
        """Add new documents, replace changed ones (same id, other content), skip unchanged ones."""
        report: dict[str, Any] = {"added": [], "replaced": [], "unchanged": [], "chunks_added": 0, "chunks_removed": 0}
        changed: list[tuple[Document, str, list[Chunk]]] = []
        for doc in load_documents(paths, root=self.root):
            digest = content_sha256(doc)
            old = self._docs.get(doc.id)
            if old is not None and old["sha256"] == digest:
                report["unchanged"].append(doc.id)
            else:
                report["replaced" if old is not None else "added"].append(doc.id)
                changed.append((doc, digest, chunk(doc, self.max_words, self.overlap)))
        new_chunks = [c for _, _, pieces in changed for c in pieces]
        # One embedding call with only the new chunks, before anything changes: a failure leaves the index as it was.
        vectors = self._checked(self._embed([indexed_text(c) for c in new_chunks]), len(new_chunks)) if new_chunks else None
        report["chunks_removed"] = self._drop(set(report["replaced"]))
        for doc, digest, pieces in changed:
            self._docs[doc.id] = {"id": doc.id, "source": doc.source, "title": doc.title, "sha256": digest, "chunks": len(pieces)}
        if new_chunks:
            vids = np.arange(self._next_vid, self._next_vid + len(new_chunks), dtype=np.int64)
            self._next_vid += len(new_chunks)
            self._insert(new_chunks, vids, vectors)
        report["chunks_added"] = len(new_chunks)
        return report

    def remove(self, doc_ids_or_sources: list[str] | str) -> dict[str, Any]:
        """Remove documents named by id, or every document from a source file or from under a directory."""
        targets = [doc_ids_or_sources] if isinstance(doc_ids_or_sources, str) else list(doc_ids_or_sources)
        removed: set[str] = set()
        not_found = []
        for target in map(str, targets):
            matches = {d for d, info in self._docs.items() if target in (d, info["source"]) or _under(target, info["source"])}
            removed |= matches
            if not matches:
                not_found.append(target)
        count = self._drop(removed)
        for doc_id in removed:
            del self._docs[doc_id]
        return {"removed": sorted(removed), "not_found": not_found, "chunks_removed": count}

    # --- search ------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: Mode = "hybrid", candidates: int = 50) -> list[Hit]:
        """The best `k` chunks for `query`; hybrid fuses the top `candidates` of each ranking by RRF."""
        if mode not in ("hybrid", "dense", "bm25"):
            raise TuneloopError(f"unknown retrieval mode '{mode}' (use hybrid, dense or bm25)")
        if k < 1 or candidates < 1:
            raise TuneloopError(f"k and candidates must be >= 1 (got {k}, {candidates})")
        if not self._chunks or not query.strip():
            return []
        depth = max(k, candidates)
        dense = self._dense(query, depth) if mode != "bm25" else []
        lexical = self._lexical(query, depth) if mode != "dense" else []
        if mode == "dense":
            return [Hit(self._chunks[v], s, dense_rank=r) for r, (v, s) in enumerate(dense[:k], 1)]
        if mode == "bm25":
            return [Hit(self._chunks[v], s, bm25_rank=r) for r, (v, s) in enumerate(lexical[:k], 1)]
        dense_rank = {v: r for r, (v, _) in enumerate(dense, 1)}
        bm25_rank = {v: r for r, (v, _) in enumerate(lexical, 1)}
        fused = {v: sum(1 / (RRF_K + ranks[v]) for ranks in (dense_rank, bm25_rank) if v in ranks)
                 for v in dense_rank.keys() | bm25_rank.keys()}
        inf = float("inf")
        order = sorted(fused, key=lambda v: (-fused[v], dense_rank.get(v, inf), bm25_rank.get(v, inf), v))
        return [Hit(self._chunks[v], fused[v], dense_rank.get(v), bm25_rank.get(v)) for v in order[:k]]

    def __len__(self) -> int:
        return len(self._chunks)

    def documents(self) -> list[dict[str, Any]]:
        """{id, source, title, sha256, chunks} per document, by id."""
        return [dict(self._docs[d]) for d in sorted(self._docs)]

    @property
    def dim(self) -> int | None:
        return self._flat.d if self._flat is not None else None

    # --- internals ---------------------------------------------------------------------------------
    def _checked(self, vectors: np.ndarray, count: int) -> np.ndarray:
        """Normalised float32 rows, one per chunk, as wide as the index."""
        vectors = _normalised(vectors)
        if len(vectors) != count:
            raise TuneloopError(f"the embedder returned {len(vectors)} vectors for {count} chunks")
        if self._flat is not None and count and vectors.shape[1] != self._flat.d:
            raise TuneloopError(f"{self.path}: vectors of width {vectors.shape[1]} do not fit an index of width "
                                f"{self._flat.d}; use the embedder the knowledge base was built with")
        return vectors

    def _insert(self, chunks: list[Chunk], vids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._checked(vectors, len(chunks))
        if not len(chunks):
            return
        if self._index is None:
            self._flat = _faiss().IndexFlatIP(vectors.shape[1])
            self._index = _faiss().IndexIDMap(self._flat)
        self._index.add_with_ids(vectors, vids)
        self._chunks.update(zip(map(int, vids), chunks))
        self._bm25 = None

    def _drop(self, doc_ids: set[str]) -> int:
        vids = [v for v, c in self._chunks.items() if c.doc_id in doc_ids]
        if vids:
            self._index.remove_ids(np.array(vids, dtype=np.int64))
            for v in vids:
                del self._chunks[v]
            self._bm25 = None
        return len(vids)

    def _dense(self, query: str, depth: int) -> list[tuple[int, float]]:
        vector = _normalised(self._embed([query]))
        scores, vids = self._index.search(vector, min(depth, self._index.ntotal))
        return [(int(v), float(s)) for v, s in zip(vids[0], scores[0]) if v >= 0]

    def _lexical(self, query: str, depth: int) -> list[tuple[int, float]]:
        if self._bm25 is None:
            order = list(self._chunks)
            self._bm25 = (BM25([indexed_text(self._chunks[v]) for v in order]), order)
        bm25, order = self._bm25
        return [(order[p], s) for p, s in bm25.search(query, depth)]


def indexed_text(c: Chunk) -> str:
    """What is embedded and keyword-indexed: the chunk, led by its document title when the text lacks it."""
    return f"{c.title}\n{c.text}" if c.title and not c.text.startswith(c.title) else c.text


def content_sha256(doc: Document) -> str:
    return hashlib.sha256(json.dumps([doc.title, doc.text], ensure_ascii=False).encode()).hexdigest()


def _default_embed(texts: list[str]) -> np.ndarray:
    from tuneloop.models.embed import embed

    return embed(texts)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise TuneloopError(f"the embedder must return a 2-D array (got shape {vectors.shape})")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _is_kb(path: Path) -> bool:
    try:
        return read_manifest(path).get("stage") == STAGE
    except (TuneloopError, ValueError, OSError):
        return False


def _under(target: str, source: str) -> bool:
    """Whether `source` is the file `target`, or lies under the directory `target`."""
    try:
        return Path(source).resolve().is_relative_to(Path(target).resolve())
    except (OSError, ValueError):
        return False


def _faiss():
    """faiss, imported on first use: it is part of the 'rag' extra."""
    require("rag", "a knowledge base")
    import faiss

    return faiss
