"""Readers: stream every input row with its file and position, including the rows that cannot be decoded.

Supported: JSONL (one object per line), JSON (an array of objects), CSV (header row; a `messages`
column may hold a JSON-encoded list), Parquet, and Hugging Face `datasets` folders written by
`save_to_disk` (a Dataset, or a DatasetDict whose every split is read, each as its own source
`FOLDER/SPLIT`). `line` is the physical line for JSONL and CSV, the 1-based item index for JSON arrays,
and the 1-based row index for Parquet and datasets folders.
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
from tuneloop.layout import DatasetsFolder


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
    if Path(path).is_dir():
        dataset_splits(Path(path))  # raises unless it is a datasets folder
        return
    if not Path(path).is_file():
        raise TuneloopError(f"{path}: input file not found")
    if Path(path).suffix.lower() not in READERS:
        raise TuneloopError(f"{path}: unsupported file type '{Path(path).suffix}' (supported: {', '.join(READERS)})")


def read_rows(path: Path, decode: bool = True) -> Iterator[RawRow]:
    check_readable(path)
    path = Path(path)
    if path.is_dir():
        for split in dataset_splits(path):
            yield from _read_dataset(split)
    elif path.suffix.lower() == ".jsonl":
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


# --- Hugging Face `datasets` folders (Dataset.save_to_disk, DatasetDict.save_to_disk) ----------------
def is_dataset_folder(path: Path) -> bool:
    folder = DatasetsFolder(Path(path))
    return Path(path).is_dir() and (folder.state.is_file() or folder.splits.is_file())


def input_bytes(path: Path) -> int:
    """Size of an input: the file, or every file of a datasets folder."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def dataset_splits(path: Path) -> list[Path]:
    """The Dataset folders to read: the folder itself, or each split of a DatasetDict in its listed order."""
    folder = DatasetsFolder(path)
    if folder.state.is_file():
        return [path]
    if not folder.splits.is_file():
        raise TuneloopError(f"{path}: a folder is an input only when Hugging Face datasets wrote it with save_to_disk "
                            "(state.json or dataset_dict.json inside); otherwise give the data files in it")
    try:
        splits = json.loads(folder.splits.read_text())["splits"]
    except (ValueError, KeyError, TypeError):
        raise TuneloopError(f"{folder.splits}: not a datasets split list") from None
    missing = [s for s in splits if not DatasetsFolder(path / s).state.is_file()]
    if missing:
        raise TuneloopError(f"{path}: split folder(s) {missing} named in dataset_dict.json have no state.json")
    return [path / split for split in splits]


def _read_dataset(folder: Path) -> Iterator[RawRow]:
    """Rows of the folder's Arrow shards (Arrow IPC streams, in state.json's order): pyarrow alone reads them.
    Arrow gives every struct every field of the schema, null where a row had none; those nulls are dropped
    so a row reads as it was written."""
    import pyarrow as pa

    try:
        shards = [entry["filename"] for entry in json.loads(DatasetsFolder(folder).state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError):
        raise TuneloopError(f"{DatasetsFolder(folder).state}: no list of data files (_data_files); was it written by save_to_disk?") from None
    source, number = str(folder), 0
    for shard in shards:
        try:
            reader = pa.ipc.open_stream(pa.memory_map(str(folder / shard)))
        except (OSError, pa.ArrowInvalid) as err:
            raise TuneloopError(f"{folder / shard}: not a readable Arrow shard ({err})") from None
        for batch in reader:
            for row in batch.to_pylist():
                number += 1
                yield RawRow(source, number, _without_nulls(row))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
