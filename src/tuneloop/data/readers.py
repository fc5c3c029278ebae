"""Readers: stream every input row with its file and position, including the rows that cannot be decoded.

Supported: JSONL (one object per line), JSON (an array of objects), CSV (header row; a `messages`
column may hold a JSON-encoded list), Parquet. `line` is the physical line for JSONL and CSV, the
1-based item index for JSON arrays, and the 1-based row index for Parquet.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import TuneloopError


@dataclass
class RawRow:
    source: str
    line: int
    value: Any = None
    # Set when the row could not be decoded at all; `value` is then the raw text.
    error: str | None = None
    # A JSONL line not decoded yet (read_rows(decode=False)): the data stage decodes in its workers.
    text: str | None = None

    def __reduce__(self):
        # Positional fields: rows cross to worker processes by the thousand, and this unpickles ~4x faster.
        return RawRow, (self.source, self.line, self.value, self.error, self.text)


def check_readable(path: Path) -> None:
    """Raise the one-line error a user needs when a file is missing or of an unsupported type."""
    if not Path(path).is_file():
        raise TuneloopError(f"{path}: input file not found")
    if Path(path).suffix.lower() not in READERS:
        raise TuneloopError(f"{path}: unsupported file type '{Path(path).suffix}' (supported: {', '.join(READERS)})")


def read_rows(path: Path, decode: bool = True) -> Iterator[RawRow]:
    check_readable(path)
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        yield from _read_jsonl(path, decode)
    else:
        yield from READERS[path.suffix.lower()](path)


def _read_jsonl(path: Path, decode: bool = True) -> Iterator[RawRow]:
    source = str(path)  # one string shared by every row, so a pickled chunk holds it once
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield RawRow(source, number, raw.decode("utf-8", "replace").rstrip("\n"), f"invalid UTF-8 at byte {err.start}")
                continue
            if not text.strip():
                continue  # blank lines are layout, not rows
            if not decode:
                yield RawRow(source, number, text=text)
                continue
            try:
                yield RawRow(source, number, json.loads(text))
            except json.JSONDecodeError as err:
                yield RawRow(source, number, text.rstrip("\n"), f"malformed JSON ({err.msg} at column {err.colno})")


def _read_json(path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise TuneloopError(f"{path}: invalid UTF-8 at byte {err.start}") from None
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several objects, one per line: really JSONL
            yield from _read_jsonl(path)
            return
        raise TuneloopError(f"{path}: malformed JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, list):
        raise TuneloopError(f"{path}: a .json input must hold an array of rows (use .jsonl for one row per line)")
    for index, item in enumerate(data, start=1):
        yield RawRow(str(path), index, item)


def _read_csv(path: Path) -> Iterator[RawRow]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TuneloopError(f"{path}: invalid UTF-8 at byte {err.start}; save the CSV as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    start = 2  # physical line of the first data row (after the header)
    for row in reader:
        if None in row:  # more cells than header columns
            yield RawRow(str(path), start, row.pop(None), f"{len(reader.fieldnames or [])} columns expected, more found")
        elif any(value is None for value in row.values()):
            yield RawRow(str(path), start, row, "fewer cells than header columns")
        elif any(value.strip() for value in row.values()):
            yield RawRow(str(path), start, row)
        start = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise TuneloopError(f"{path}: not a readable Parquet file ({err})") from None
    number = 0
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield RawRow(str(path), number, row)


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
