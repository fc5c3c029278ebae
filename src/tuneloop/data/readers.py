"""Readers: yield every input row with its file and line number, including the unreadable ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import TuneloopError

SUPPORTED = (".jsonl",)


@dataclass
class RawRow:
    source: str
    line: int
    value: Any = None
    # Set when the line could not be decoded at all; `value` is then the raw text.
    error: str | None = None


def read_rows(path: Path) -> Iterator[RawRow]:
    if not path.is_file():
        raise TuneloopError(f"{path}: input file not found")
    if path.suffix.lower() not in SUPPORTED:
        raise TuneloopError(f"{path}: unsupported file type '{path.suffix}' (supported: {', '.join(SUPPORTED)})")
    yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield RawRow(str(path), number, raw.decode("utf-8", "replace"), f"invalid UTF-8 at byte {err.start}")
                continue
            if not text.strip():
                continue  # blank lines are layout, not rows
            try:
                yield RawRow(str(path), number, json.loads(text))
            except json.JSONDecodeError as err:
                yield RawRow(str(path), number, text.rstrip("\n"), f"malformed JSON ({err.msg} at column {err.colno})")
