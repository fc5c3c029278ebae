"""The ordinary support text tuneloop ships (examples/): every message of every example row, one string each.

Used by the screening check (false positives) and by the model conversion (strings to compare on).
Rows that do not parse (the ticket example keeps one malformed line on purpose) are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def messages(row) -> list[str]:
    """The message texts of one row in any of the data stage's input forms (string or message-list fields)."""
    found = []
    for key in ("messages", "prompt", "completion", "chosen", "rejected", "conversations"):
        value = row.get(key) if isinstance(row, dict) else None
        if isinstance(value, str):
            found.append(value)
        for message in value if isinstance(value, list) else []:
            if isinstance(message, dict) and isinstance(message.get("content"), str) and message["content"].strip():
                found.append(message["content"])
    return found


def example_texts(root: Path = ROOT) -> dict[str, list[str]]:
    """Example file (relative path) -> its message texts, in file order (duplicates kept)."""
    out = {}
    for path in sorted((root / "examples").rglob("*.jsonl")):
        texts = []
        for line in path.read_text().splitlines():
            try:
                texts += messages(json.loads(line))
            except json.JSONDecodeError:
                continue
        out[str(path.relative_to(root))] = texts
    return out


def doc_paragraphs(root: Path = ROOT) -> list[str]:
    """The paragraphs of the shipped product documents (examples/**/*.md)."""
    return [p.strip() for path in sorted((root / "examples").rglob("*.md")) for p in path.read_text().split("\n\n") if p.strip()]
