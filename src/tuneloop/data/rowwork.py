"""Per-row work of the data stage, runnable in worker processes.

Everything that looks at one row alone happens here: decode, detect the form and canonicalise, clean,
redact PII, check the answer and the token length, screen for harmful content (`harmful.py`), compute
the exact-duplicate key and the MinHash sketch. What depends on the order of rows (which copy is kept) stays in `prepare`. On 2 cores the work
is spread over worker processes in chunks, in order; small inputs run in-process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import orjson

from tuneloop.config import DataConfig, ModelConfig, TaskConfig
from tuneloop.data.checks import AnswerChecker, LengthChecker
from tuneloop.data.clean import Cleaner
from tuneloop.data.dedup import NearDuplicateIndex, Sketch, normalise, normalised_key
from tuneloop.data.forms import canonicalise, texts
from tuneloop.data.harmful import HarmfulContent
from tuneloop.pii import Redactor
from tuneloop.data.readers import RawRow

NUM_PERM = 128


@dataclass(slots=True)  # slots: outcomes cross the process boundary by the thousand; keep pickles small
class Outcome:
    source: str
    line: int
    # Kept rows: the canonical row as a UTF-8 JSON line (newline included), its keys for deduplication,
    # its label and length.
    row_json: bytes | None = None
    key: str | None = None
    sketch: Sketch | None = None
    label: str | None = None
    length: int | None = None
    truncated: bool = False
    form: str | None = None
    pii: dict[str, int] | None = None  # counts per PII type, only when something was found
    # Kept rows of data.synthetic and data.replay files (train only): the seed row's key a paraphrase keeps the
    # answer of ("" = none); None = a real row.
    origin: str | None = None
    # Rows the harmful-content screen flagged: which message, which detector, why (kept in mode warn).
    harmful: dict | None = None
    # Rejected rows: the rejected.jsonl record.
    rejection: dict | None = None
    # Worker-side only, never sent back: the text to sketch, sketched for a whole chunk at once.
    normalised: str | None = None
    screened: list | None = None  # (field, role, text) of each message, screened for a whole chunk at once

    def __reduce__(self):
        # Positional fields: ~6x cheaper to pickle and unpickle than the default state of a slots class,
        # and the main process unpickles every row.
        return Outcome, (self.source, self.line, self.row_json, self.key, self.sketch, self.label, self.length,
                         self.truncated, self.form, self.pii, self.origin, self.harmful, self.rejection)  # field order


class RowProcessor:
    def __init__(self, cfg: DataConfig, task: TaskConfig, model: ModelConfig | None):
        self.cfg, self.task = cfg, task
        self.synthetic = {str(path) for path in cfg.synthetic}
        self.replay = {str(path) for path in cfg.replay}
        self.clean = Cleaner(cfg.clean)
        pii = cfg.pii
        self.redactor = Redactor(**({"types": pii.types} if pii.types else {}), placeholders=pii.placeholders) if pii.enabled else None
        self.check_answer = AnswerChecker(task, cfg.allowed_labels)
        self.check_length = LengthChecker(model, cfg.max_tokens, cfg.over_length) if model else None
        # Same arguments in every process give the same permutations, so sketches are comparable.
        self.sketcher = NearDuplicateIndex(cfg.dedup.threshold, num_perm=NUM_PERM) if cfg.dedup.near else None
        self.harmful = HarmfulContent(cfg.safety, task.system_prompt) if cfg.safety.mode != "off" else None

    def process(self, chunk: list[RawRow]) -> list[Outcome]:
        """Outcomes of a chunk of rows, in order: each row on its own, then the harmful-content screen and the
        sketches of the kept ones together."""
        outcomes = [self(raw) for raw in chunk]
        if self.harmful is not None:
            self.harmful.check(outcomes)
        if self.sketcher is not None:
            kept = [outcome for outcome in outcomes if outcome.normalised is not None]
            for outcome, sketch in zip(kept, self.sketcher.sketch_many([outcome.normalised for outcome in kept])):
                outcome.sketch, outcome.normalised = sketch, None
        return outcomes

    def __call__(self, raw: RawRow) -> Outcome:
        """One row's outcome; its sketch is left to `process`."""
        result = Outcome(raw.source, raw.line)

        def reject(rule: str, reason: str, field: str | None = None, value=raw.value) -> Outcome:
            result.rejection = {"source": raw.source, "line": raw.line, "rule": rule, "reason": reason, "field": field, "row": value}
            return result

        if raw.error:
            return reject("unreadable", raw.error)
        value = raw.value
        if raw.text is not None:  # JSONL lines are decoded here, in the worker (orjson: ~3x faster)
            try:
                value = orjson.loads(raw.text)
            except orjson.JSONDecodeError as err:
                return reject("unreadable", f"malformed JSON ({err.msg} at column {err.colno})", value=raw.text)
        row, result.form, problem = canonicalise(value, self.cfg.form, self.cfg.fields)
        if problem:
            return reject(problem.rule, problem.reason, problem.field, value)

        pii: Counter | None = None
        for message in texts(row):
            message["content"] = self.clean(message["content"])
            if self.redactor:
                message["content"], found = self.redactor.redact(message["content"])
                if found:
                    pii = found if pii is None else pii + found
        if pii:
            result.pii = dict(pii)  # a plain dict pickles far cheaper than a Counter
        emptied = next((m for m in texts(row) if not m["content"] and not m.get("tool_calls")), None)
        if emptied:
            return reject("empty_after_cleaning", f"a {emptied['role']} message is empty after cleaning", value=value)
        add_system_prompt(row, self.task.system_prompt)

        if self.check_length:
            result.length, result.truncated, too_long = self.check_length(row)
        else:
            too_long = None
        problem, result.label = self.check_answer(row)
        problem = problem or too_long
        if problem:
            return reject(problem.rule, problem.reason, problem.field, value)

        normalised = normalise(dedup_text(row))  # once, for both detectors
        result.key = normalised_key(normalised)
        if self.sketcher is not None:
            result.normalised = normalised
        given = value.get("metadata") if isinstance(value, dict) and isinstance(value.get("metadata"), dict) else {}
        if raw.source in self.synthetic:  # the teacher's marks are kept; the file is recorded beside them
            result.origin = given.get("seed") if isinstance(given.get("seed"), str) else ""
            row["metadata"] = {**given, "source": "synthetic", "file": raw.source, "line": raw.line}
        elif raw.source in self.replay:  # an earlier round's train row: train only, like synthetic rows
            result.origin = ""
            row["metadata"] = {**given, "source": raw.source, "line": raw.line, "replay": True}
        else:
            row["metadata"] = {**given, "source": raw.source, "line": raw.line}  # the row's own metadata is kept
        result.row_json = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)  # bytes: written to the spool as they are
        if self.harmful is not None:
            result.screened = self.harmful.texts(row)
        return result


def add_system_prompt(row: dict, system_prompt: str | None) -> None:
    conversation = row["messages"] if "messages" in row else row["prompt"]
    if system_prompt and conversation[0]["role"] != "system":
        conversation.insert(0, {"role": "system", "content": system_prompt})


def dedup_text(row: dict) -> str:
    """What two rows must share to be duplicates: every non-system turn (and both answers of a pair), tool
    calls included (their names and arguments, not their ids)."""
    return "\n".join(m["content"] + "".join(c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or [])
                     for m in texts(row) if m["role"] != "system")


# --- parallel map ----------------------------------------------------------------------------------
_processor: RowProcessor | None = None
CHUNK = 2000


def _work(chunk: list[RawRow]) -> list[Outcome]:
    return _processor.process(chunk)


def process_rows(rows: Iterable[RawRow], processor: RowProcessor, workers: int) -> Iterator[Outcome]:
    """Outcomes in input order; `workers` > 1 spreads chunks over that many processes."""
    iterator = iter(rows)
    chunks = iter(lambda: list(islice(iterator, CHUNK)), [])
    if workers <= 1:
        yield from (result for chunk in chunks for result in processor.process(chunk))
        return
    global _processor
    # fork: the workers inherit the processor (its tokenizer and patterns loaded once, here) and the
    # imported modules, instead of loading them again.
    _processor = processor
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            yield from (result for results in pool.imap(_work, chunks) for result in results)
    finally:
        _processor = None


def default_workers(total_bytes: int) -> int:
    """Worker processes worth starting: none for small inputs, else one per core."""
    return 1 if total_bytes < 4_000_000 else max(1, min(os.cpu_count() or 1, 8))
