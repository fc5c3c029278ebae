"""Run folders under the runs root, as the dashboard shows them: what each stage wrote, read from disk.

A run is a folder directly under the root (or one level deeper, for folders that group runs) that holds
a stage's manifest.json, or stage folders (data/, train/, eval/ ...) as `tuneloop run` and `demo` write
them. A training that is still going has metrics.jsonl and no manifest yet: it is shown as running.
Every path a URL names is checked to lie inside the root; only known artifact files are ever served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import TuneloopError
from tuneloop.layout import MANIFEST, AbDir, DataDir, MonitorDir, TrainDir

# The stage folders of a pipeline run, in the order the pipeline writes them.
STAGE_FOLDERS = ("data", "train", "sft-export", "train-grpo", "eval", "eval-production", "monitor")
SERVED_FILES = re.compile(r"(loss|metrics|lengths|token_lengths|labels|timeseries|confusion_[A-Za-z0-9_.-]{1,64})\.png"
                          r"|report\.html|review\.html")
MAX_ID = 512
AB_CSV, REVIEW_CSV = AbDir(Path()).csv.name, DataDir(Path()).review_csv.name


class RunNotFound(TuneloopError):
    pass


@dataclass
class Stage:
    folder: str  # relative to the run ("" when the run is one stage's folder)
    path: Path
    kind: str  # data, train, eval, export, monitor, or "?"
    manifest: dict[str, Any] | None

    @property
    def running(self) -> bool:
        return self.kind == "train" and self.manifest is None

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()


@dataclass
class Run:
    id: str  # the folder relative to the root, with "/"
    path: Path
    modified: float

    @property
    def stages(self) -> list[Stage]:
        own = _stage(self.path, "")
        if own is not None:
            return [own]
        return [s for s in (_stage(self.path / name, name) for name in STAGE_FOLDERS) if s is not None]

    def stage(self, folder: str) -> Stage:
        found = next((s for s in self.stages if s.folder == folder), None)
        if found is None:
            raise RunNotFound(f"run {self.id} has no stage folder {folder!r}")
        return found


def list_runs(root: Path, offset: int = 0, limit: int | None = 50, query: str = "") -> tuple[list[Run], int]:
    """One page of runs, newest first, and how many there are (whose id contains `query`)."""
    found = [r for r in _candidates(root) if query.lower() in r.id.lower()]
    found.sort(key=lambda r: (-r.modified, r.id))
    return found[offset:None if limit is None else offset + limit], len(found)


def open_run(root: Path, run_id: str) -> Run:
    if not run_id or len(run_id) > MAX_ID or any(part in ("", ".", "..") for part in run_id.split("/")):
        raise RunNotFound(f"no run {run_id!r}")
    base = root.resolve()
    path = (base / run_id).resolve()
    if not path.is_relative_to(base) or path == base or not path.is_dir() or not _is_run(path):
        raise RunNotFound(f"no run {run_id!r} under {root}")
    return Run(path.relative_to(base).as_posix(), path, path.stat().st_mtime)


def artifact(stage: Stage, name: str) -> Path:
    """A file a page shows (a plot, a report), by its name in the stage folder; anything else is not found."""
    path = stage.path / name
    if not SERVED_FILES.fullmatch(name) or not path.is_file():
        raise RunNotFound(f"no file {name!r} in {stage.folder or 'the run'}")
    return path


def read_jsonl(path: Path, after: int = 0, limit: int = 100_000) -> tuple[list[dict[str, Any]], int]:
    """(the complete lines after the first `after`, as dicts; the number of lines read so far). A line being
    written (no newline yet) is left for the next read; a broken one is skipped."""
    records: list[dict[str, Any]] = []
    upto = after
    if not path.is_file():
        return records, upto
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            if number < after:
                continue
            if not line.endswith("\n") or len(records) >= limit:
                break
            upto = number + 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
    return records, upto


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _candidates(root: Path) -> list[Run]:
    if not root.is_dir():
        return []
    base = root.resolve()
    runs = []
    for child in _dirs(base):
        if _is_run(child):
            runs.append(child)
        else:  # a folder that groups runs (e.g. runs/sweeps/...)
            runs += [grandchild for grandchild in _dirs(child) if _is_run(grandchild)]
    return [Run(p.relative_to(base).as_posix(), p, p.stat().st_mtime) for p in runs]


def _dirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def _is_run(path: Path) -> bool:
    return _stage(path, "") is not None or any((path / name).is_dir() for name in STAGE_FOLDERS[:2])


def _stage(path: Path, folder: str) -> Stage | None:
    manifest = read_json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if manifest is not None:
        return Stage(folder, path, str(manifest.get("stage") or "?"), manifest)
    if TrainDir(path).metrics.is_file():
        return Stage(folder, path, "train", None)  # training now: no manifest until it ends
    if folder == "monitor" and MonitorDir(path).report.is_file() and MonitorDir(path).report_html.is_file():
        return Stage(folder, path, "monitor", None)
    return None


def folder_in(root: Path, relative: str) -> Path:
    """A folder named relative to the root, which must lie inside it."""
    if not relative or len(relative) > MAX_ID or any(part in ("", ".", "..") for part in relative.split("/")):
        raise RunNotFound(f"no folder {relative!r}")
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or not path.is_dir():
        raise RunNotFound(f"no folder {relative!r} under {root}")
    return path


def review_folders(root: Path, depth: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Blind A/B exports (ab.csv + ab_key.json) and data review samples (review.csv) under the root."""
    found: dict[str, list[dict[str, Any]]] = {"ab": [], "data": []}
    if not root.is_dir():
        return found
    base = root.resolve()
    for level in range(1, depth + 1):
        pattern = "/".join(["*"] * level)
        for csv_file in sorted(base.glob(f"{pattern}/{AB_CSV}")):
            ab = AbDir(csv_file.parent)
            if ab.key.is_file():
                found["ab"].append({"dir": ab.root.relative_to(base).as_posix(), "judged": ab.judgments.is_file(),
                                    "modified": csv_file.stat().st_mtime})
        for csv_file in sorted(base.glob(f"{pattern}/{REVIEW_CSV}")):
            found["data"].append({"dir": csv_file.parent.relative_to(base).as_posix(), "modified": csv_file.stat().st_mtime})
    for kind in found.values():
        kind.sort(key=lambda f: -f["modified"])
    return found
