"""Export a seeded sample of prepared rows for a domain expert to read and mark (CSV and HTML), and the
verdicts they give (in the CSV, or in the dashboard, which writes the same CSV)."""

from __future__ import annotations

import csv
import html
import json
import random
from pathlib import Path

from tuneloop.artifacts import write_csv
from tuneloop.errors import TuneloopError
from tuneloop.layout import SPLITS, DataDir

COLUMNS = ("split", "source", "line", "prompt", "answer", "verdict (ok/fix/drop)", "comment")
VERDICT = COLUMNS[5]
VERDICTS = ("", "ok", "fix", "drop")


def write_review(out: Path, n: int, seed: int) -> list[Path]:
    rows = []
    folder = DataDir(out)
    for split in SPLITS:
        with open(folder.split(split)) as handle:
            rows += [(split, json.loads(line)) for line in handle]
    sample = random.Random(seed).sample(rows, min(n, len(rows)))
    records = [_record(split, row) for split, row in sample]
    with open(folder.review_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(records)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in records)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    folder.review_html.write_text(
        "<!doctype html><meta charset='utf-8'><title>review sample</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem;vertical-align:top;white-space:pre-wrap}</style>"
        f"<p>{len(records)} rows sampled for review. Mark each in {folder.review_csv.name}.</p><table><tr>{head}</tr>{cells}</table>"
    )
    return [folder.review_csv, folder.review_html]


def drops(path: Path) -> dict[tuple[str, str], str]:
    """(source, line) -> the reviewer's comment, for every row a review.csv marks `drop`."""
    return {(row["source"], row["line"]): row["comment"] for row in _read(Path(path)) if row[VERDICT].strip().lower() == "drop"}


def read_review(out: Path) -> list[dict]:
    """The rows of a data folder's review.csv, as dicts of COLUMNS."""
    return _read(DataDir(out).review_csv)


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        raise TuneloopError(f"{path}: no review sample here; `tuneloop data prepare` writes one with data.review_sample: N")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise TuneloopError(f"{path}:1: the header lacks {', '.join(missing)}; it must be {', '.join(COLUMNS)}")
    return [{c: row.get(c) or "" for c in COLUMNS} for row in rows]


def save_verdicts(out: Path, verdicts: dict[int, tuple[str, str]]) -> Path:
    """Write `verdicts[row index] = (verdict, comment)` into review.csv, in place (atomically)."""
    path = DataDir(out).review_csv
    rows = _read(path)
    for index, (verdict, comment) in verdicts.items():
        if not 0 <= index < len(rows):
            raise TuneloopError(f"{path}: no row {index + 1}")
        if verdict not in VERDICTS:
            raise TuneloopError(f"row {index + 1}: verdict {verdict!r} is not one of ok, fix, drop (or blank)")
        rows[index][VERDICT], rows[index]["comment"] = verdict, comment
    return write_csv(path, COLUMNS, rows)


def _record(split: str, row: dict) -> tuple:
    meta = row.get("metadata", {})
    if "messages" in row:
        prompt = "\n\n".join(f"[{m['role']}] {m['content']}" for m in row["messages"][:-1] if m["role"] != "system")
        answer = row["messages"][-1]["content"]
    else:
        prompt = "\n\n".join(m["content"] for m in row["prompt"] if m["role"] != "system")
        answer = f"chosen: {row['chosen'][0]['content']}\nrejected: {row['rejected'][0]['content']}"
    return (split, meta.get("file", meta.get("source", "")), meta.get("line", ""), prompt, answer, "", "")
