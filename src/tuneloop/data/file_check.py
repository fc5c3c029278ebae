"""One file through the data stage's row checks, without preparing it: the check an upload gets (the jobs
API's POST /v1/files) before anything trains on it."""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import DataConfig, DedupConfig, PiiConfig, TaskConfig
from tuneloop.data.readers import read_rows
from tuneloop.data.rowwork import RowProcessor

MAX_REPORTED = 20


def check_file(path: Path, max_reported: int = MAX_REPORTED) -> str | None:
    """None when every row passes, else a report naming each bad line (the first `max_reported` of them)."""
    check = RowProcessor(DataConfig(pii=PiiConfig(enabled=False), dedup=DedupConfig(exact=False, near=False)), TaskConfig(), None)
    problems, rows = [], 0
    for raw in read_rows(path):
        rows += 1
        outcome = check(raw)
        if outcome.rejection:
            r = outcome.rejection
            problems.append(f"line {r['line']}: {r['reason']}" + (f" ({r['field']})" if r.get("field") else ""))
    if not rows:
        return f"{path.name}: no rows; expected JSONL with one training example per line"
    if problems:
        shown = "; ".join(problems[:max_reported]) + (f"; ... and {len(problems) - max_reported} more" if len(problems) > max_reported else "")
        return f"{len(problems)} of {rows} rows are invalid: {shown}"
    return None
