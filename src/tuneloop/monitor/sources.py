"""Where the monitor's inputs come from: the request log (the database or a JSONL file), each served
version's task (for online quality scores), and the training data a version was trained on (for drift)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any, Callable, Protocol

from tuneloop.artifacts import read_jsonl, read_manifest
from tuneloop.errors import TuneloopError
from tuneloop.metrics.structure import parse_object
from tuneloop.models import last_text
from tuneloop.monitor.logstats import read_log, records_since


class Traffic(Protocol):
    """The request log and its feedback (tuneloop.db.requestlog.RequestStore is one)."""

    def requests(self, since: dt.datetime | None = None) -> list[dict[str, Any]]: ...

    def feedback(self, since: dt.datetime | None = None) -> list[dict[str, Any]]: ...


class Versions(Protocol):
    """Registered versions by reference (tuneloop.registry.Registry is one): `resolve(ref) -> version dict`."""

    def resolve(self, ref: str) -> dict[str, Any]: ...


def load_records(traffic: Traffic, log: Path | None, since: dt.datetime | None) -> list[dict[str, Any]]:
    return records_since(read_log(log), since) if log else traffic.requests(since=since)


def task_lookup(versions: Versions) -> Callable[[str], dict | None]:
    """model name in the log -> the task it was trained for (None for the bare base model)."""

    @functools.cache
    def task_for(model: str) -> dict | None:
        try:
            return versions.resolve(model).get("task") or None
        except TuneloopError:
            return None

    return task_for


def training_sample(version: dict) -> tuple[list[str], list[str | None], dict]:
    """User texts and labels of the training split of a registered version (its train run's input)."""
    try:
        train_file = Path(read_manifest(Path(version["artifact_path"]))["inputs"]["train"]["path"])
    except (TuneloopError, KeyError) as err:
        raise TuneloopError(f"{version['ref']}: cannot find its training data ({err}); drift needs a version "
                            f"registered from a train run") from None
    if not train_file.is_file():
        raise TuneloopError(f"{version['ref']}: its training data {train_file} is gone; drift compares against it")
    task = version.get("task") or {}
    rows = read_jsonl(train_file)
    texts = [last_text(row.get("messages", [])) for row in rows]
    labels = [_label(last_text(row.get("messages", []), "assistant"), task) for row in rows]
    return texts, labels, task


def traffic_sample(records: list[dict], model_ref: str, task: dict) -> tuple[list[str], list[str | None]]:
    """User texts and answer labels of the successful requests a version served."""
    mine = [r for r in records if r["model"] == model_ref and r["status"] < 400]
    texts = [last_text((r.get("request") or {}).get("messages") or [{"role": "user", "content": (r.get("request") or {}).get("prompt", "")}])
             for r in mine]
    return texts, [_label(r.get("response") or "", task) for r in mine]


def _label(answer: str, task: dict) -> str | None:
    fields = task.get("label_fields") or []
    parsed = parse_object(answer) if fields else None
    value = parsed.get(fields[0]) if isinstance(parsed, dict) else None
    return json.dumps(value) if isinstance(value, (dict, list)) else (None if value is None else str(value))
