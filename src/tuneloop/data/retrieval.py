"""Retrieval-augmented training data: each prompt's last user message gets the top-k passages of a
knowledge base, in the template the server uses for the same knowledge base (tuneloop.rag.template).

Runs on the written split files; a frozen test split from an earlier round is left as it was (it
was augmented when it was made). Each row records the passages it was given in metadata.sources.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.artifacts import read_jsonl
from tuneloop.config import RagDataConfig
from tuneloop.layout import DataDir


def augment_splits(out: Path, rag: RagDataConfig, splits: tuple[str, ...]) -> dict[str, int]:
    from tuneloop.models.chat import last_text
    from tuneloop.rag.index import KnowledgeBase
    from tuneloop.rag.template import augment

    knowledge = KnowledgeBase.load(rag.index)
    counts = {}
    for split in splits:
        path = DataDir(out).split(split)
        rows = read_jsonl(path) if path.is_file() else []
        for row in rows:
            conversation = row["messages"][:-1] if "messages" in row else row["prompt"]
            hits = knowledge.search(last_text(conversation), k=rag.k)
            if "messages" in row:
                row["messages"] = [*augment(conversation, hits), row["messages"][-1]]
            else:
                row["prompt"] = augment(conversation, hits)
            row.setdefault("metadata", {})["sources"] = [hit.chunk.id for hit in hits]
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        counts[split] = len(rows)
    return counts
