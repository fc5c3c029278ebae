"""The resumable output of `tuneloop data synth`: rows in FILE, one record per finished request in
FILE.requests.jsonl, rows a judge dropped in FILE.rejected.jsonl.

A request's rows are written (and flushed to disk) before its record, so a record means the rows are in.
On a rerun, a torn last line (the process killed mid-write) is cut, rows whose request has no record are
removed (that request is asked again), and every recorded request is skipped: nothing is asked twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tuneloop.artifacts import write_jsonl
from tuneloop.layout import SynthFile


class Journal:
    def __init__(self, out: Path):
        self.out, self.requests, self.rejected = out, SynthFile(out).requests, SynthFile(out).rejected
        out.parent.mkdir(parents=True, exist_ok=True)
        for path in (out, self.requests, self.rejected):
            _cut_torn_line(path)
        self.done: dict[str, dict] = {r["key"]: r for r in _records(self.requests)}
        self.removed = self._drop_unrecorded_rows()
        self.written = sum(r.get("rows", 0) for r in self.done.values())  # rows in the file, kept up to date
        self._handles = {path: open(path, "a", encoding="utf-8") for path in (out, self.requests, self.rejected)}

    def _drop_unrecorded_rows(self) -> int:
        if not self.out.is_file():
            return 0
        lines = self.out.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [line for line in lines if _request_of(line) in self.done]
        if len(keep) != len(lines):
            write_jsonl(self.out, [json.loads(line) for line in keep])
        return len(lines) - len(keep)

    def used(self) -> tuple[int, int]:
        """(requests, tokens) spent by the recorded requests."""
        return sum(r.get("requests", 1) for r in self.done.values()), sum(r.get("tokens", 0) for r in self.done.values())

    def record(self, rows: list[dict], rejected: list[dict], record: dict) -> None:
        for path, lines in ((self.out, rows), (self.rejected, rejected), (self.requests, [record])):
            if lines:
                handle = self._handles[path]
                handle.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
        self.done[record["key"]] = record
        self.written += len(rows)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()

    def rows_written(self) -> int:
        """Rows in the file, counted from the file itself (the report checks the running count against it)."""
        with open(self.out, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _request_of(line: str) -> str | None:
    try:
        return json.loads(line)["metadata"]["request"]
    except (ValueError, KeyError, TypeError):
        return None


def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline: a write the process did not finish."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
