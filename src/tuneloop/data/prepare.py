"""`tuneloop data prepare`: raw files in; train/val/test/rejected JSONL, report and manifest out.

Reads top to bottom. One streaming pass over every input row: decode -> detect form and
canonicalise -> clean -> redact PII -> check the answer and its length -> screen input and answer for
harmful content (all per row, in worker processes: `rowwork.py`) -> drop exact and near duplicates
and rows leaking into a frozen test split (here, in input order: the first copy is kept). Kept rows are
spooled to disk, so memory holds only what deduplication and the split need. Then split (stratified on
the first label field), write the splits from the spool, and write the report. Invariant, checked before returning:
rows in = distinct rows in train + val + new test rows (+ unused.jsonl under data.mix) + rows in rejected.jsonl.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.artifacts import read_jsonl, write_json, write_manifest
from tuneloop.config import DataConfig, ModelConfig, TaskConfig
from tuneloop.data.dedup import NearDuplicateIndex, exact_key
from tuneloop.data.mix import draw
from tuneloop.data.harmful import HarmfulTally
from tuneloop.data.readers import check_readable, input_bytes, read_rows
from tuneloop.data.report import write_report
from tuneloop.data.retrieval import augment_splits
from tuneloop.data.review import drops as review_drops
from tuneloop.data.review import write_review
from tuneloop.data.rowwork import NUM_PERM, RowProcessor, default_workers, dedup_text, process_rows
from tuneloop.data.split import split_indices
from tuneloop.errors import TuneloopError
from tuneloop.layout import SPLITS, DataDir
from tuneloop.ui import console, progress

def prepare(inputs: list[Path], out: Path, cfg: DataConfig, task: TaskConfig, model: ModelConfig | None = None) -> dict:
    """Prepare `inputs` into `out`; returns the report (also in out/report.json and out/report.html)."""
    started = time.time()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise TuneloopError("no input files given (data.inputs in the config, or paths on the command line)")
    # Train-only sources are read last, so a real row always wins over its replayed or synthetic copy.
    synthetic, replay = [Path(p) for p in cfg.synthetic], [Path(p) for p in cfg.replay]
    inputs = [*(p for p in inputs if p not in synthetic and p not in replay), *replay, *synthetic]
    for path in inputs:
        check_readable(path)  # fail now, with one clear line, not after reading other files
    out.mkdir(parents=True, exist_ok=True)
    folder = DataDir(out)

    # --- setup -------------------------------------------------------------------------------
    near = NearDuplicateIndex(cfg.dedup.threshold, num_perm=NUM_PERM) if cfg.dedup.near else None
    seen: dict[str, str] = {}  # exact key -> "file:line" of the kept row (or of the frozen test row)
    frozen = _index_frozen_test(cfg.frozen_test, seen, near) if cfg.frozen_test else []
    processor = RowProcessor(cfg, task, model)
    workers = cfg.workers or default_workers(sum(input_bytes(p) for p in inputs))
    rows = (raw for path in inputs for raw in read_rows(path, decode=False))

    tally = Tally(synthetic={str(p) for p in synthetic})
    flagged = HarmfulTally()  # rows the harmful-content screen flagged (data.safety)
    spool_path, rejected_path = folder.spool, folder.rejected
    dropped = review_drops(cfg.reviewed) if cfg.reviewed else {}

    # --- one pass over every row: per-row work in workers, keep-the-first decisions here ---------
    with open(spool_path, "wb") as spool, open(rejected_path, "w") as rejected, progress(transient=True) as bar:
        task_id = bar.add_task("data", total=None, info="")
        for result in process_rows(rows, processor, workers):
            tally.rows_in += 1
            if tally.rows_in % 5000 == 0:
                bar.update(task_id, completed=tally.rows_in, info=f"{tally.rows_in:,} rows")
            if result.rejection is None and dropped:
                _drop_if_reviewed(result, dropped, cfg.reviewed)
            if result.rejection is None:
                _drop_if_duplicate(result, cfg, seen, near, tally.clusters)
            if result.harmful:
                flagged.add(result)
            if result.rejection:
                tally.reject(result)
                rejected.write(json.dumps(result.rejection, ensure_ascii=False, default=str) + "\n")
                continue
            tally.keep(result)
            spool.write(result.row_json)

    if not tally.labels and not frozen:
        spool_path.unlink()
        raise TuneloopError(f"no usable rows in {', '.join(map(str, inputs))}: see {rejected_path} for why")

    # --- split and write -----------------------------------------------------------------------
    test_ratio = 0.0 if frozen else cfg.test_ratio  # a frozen test split is reused, never extended
    assignment, leaks = _split(tally, cfg, test_ratio, {key for key, where in seen.items() if where.startswith("frozen test")})
    mixed = None
    if cfg.mix:  # the train split drawn from its sources in the configured shares
        assignment["train"], assignment["unused"], mixed = draw(assignment["train"], tally.sources, cfg.mix)
    counts = _write_splits(out, spool_path, assignment, frozen, leaks, rejected_path)
    distinct = sum(len(set(indices)) for indices in assignment.values())
    if tally.rows_in != distinct + sum(tally.rules.values()):
        raise RuntimeError(f"bug: rows were lost between input and output ({tally.rows_in} in, {counts} + rejected)")
    report = {"inputs": [str(p) for p in inputs], **tally.report(assignment, counts, len(frozen), cfg.max_tokens)}
    if mixed:
        report["mix"] = mixed
    if cfg.safety.mode != "off":
        report["harmful_content"] = flagged.report(cfg.safety)
    if cfg.rag:  # retrieval-augmented fine-tuning: context from the knowledge base in every prompt
        report["retrieval_augmented"] = augment_splits(out, cfg.rag, ("train", "val") if frozen else SPLITS)
    outputs = [folder.split(name) for name in (*SPLITS, "rejected")] + ([folder.unused] if mixed else [])
    tokenizer = processor.check_length.tokenizer if processor.check_length else None
    outputs += write_report(report, out, assignment, tally.lengths, tokenizer)
    if cfg.review_sample:
        outputs += write_review(out, cfg.review_sample, cfg.seed)
    write_json(folder.report, report)
    outputs.append(folder.report)
    write_manifest(
        out, "data", cfg, inputs={f"input{i}": p for i, p in enumerate(inputs)}, outputs=outputs, seed=cfg.seed,
        started=started, parent=cfg.frozen_test.parent if cfg.frozen_test else None,
        extra={"task": task.model_dump(mode="json"), "model": model.model_dump() if model else None, "report": report},
    )
    return report


@dataclass
class Tally:
    """What the pass over the rows counts and keeps for the split and the report (no row texts)."""

    rows_in: int = 0
    truncated: int = 0
    forms: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    pii: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)
    clusters: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    labels: list[str | None] = field(default_factory=list)
    lengths: list[int | None] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    origins: list[str | None] = field(default_factory=list)  # per kept row: None = real, else synthetic (seed key or "")
    synthetic: set[str] = field(default_factory=set)  # the data.synthetic files
    sources: list[str] = field(default_factory=list)  # per kept row: its file (data.mix draws by file)
    synthetic_in: int = 0
    synthetic_rules: Counter = field(default_factory=Counter)

    def reject(self, result) -> None:
        self.rules[result.rejection["rule"]] += 1
        if result.source in self.synthetic:
            self.synthetic_in += 1
            self.synthetic_rules[result.rejection["rule"]] += 1

    def keep(self, result) -> None:
        self.synthetic_in += result.source in self.synthetic
        self.origins.append(result.origin)
        self.sources.append(result.source)
        self.forms[result.source][result.form] += 1
        if result.pii:
            self.pii.update(result.pii)
        self.labels.append(result.label)
        self.lengths.append(result.length)
        self.keys.append(result.key)
        self.truncated += result.truncated

    def report(self, assignment: dict[str, list[int]], counts: dict[str, int], n_frozen: int, max_tokens: int | None) -> dict:
        largest = sorted(self.clusters.items(), key=lambda item: -len(item[1]))[:20]
        return {
            "forms": {source: dict(by_form) for source, by_form in self.forms.items()},
            "rows_in": self.rows_in, "kept": sum(len(set(indices)) for indices in assignment.values()),  # unused.jsonl too
            "rejected": sum(self.rules.values()),
            "rejected_by_rule": dict(self.rules.most_common()),
            "splits": counts, "frozen_test_rows": n_frozen,
            "labels": {name: dict(Counter(self.labels[i] for i in assignment[name]).most_common()) for name in SPLITS},
            "pii_redacted": dict(self.pii.most_common()),
            "duplicate_clusters": len(self.clusters),
            "largest_duplicate_clusters": [{"kept": kept, "dropped": dropped} for kept, dropped in largest],
            "leakage": _leakage(assignment, self.keys),
            "tokens": _token_summary(assignment, self.lengths, max_tokens, self.truncated),
            **({"synthetic": self._synthetic(assignment)} if self.synthetic else {}),
        }

    def _synthetic(self, assignment: dict[str, list[int]]) -> dict:
        """data.synthetic rows: in = kept (train only) + rejected by rule."""
        kept = [i for i in assignment["train"] if self.origins[i] is not None]
        return {"files": sorted(self.synthetic), "rows_in": self.synthetic_in, "kept": len(kept),
                "rejected": sum(self.synthetic_rules.values()), "rejected_by_rule": dict(self.synthetic_rules.most_common()),
                "labels": dict(Counter(self.labels[i] for i in kept).most_common())}


def _split(tally: "Tally", cfg: DataConfig, test_ratio: float, frozen_keys: set[str]) -> tuple[dict[str, list[int]], dict[int, str]]:
    """(indices per split, {index: reason} of synthetic rows rejected after the split).

    Real rows are split (stratified); synthetic rows only ever train, and a paraphrase whose seed row is in
    the val or test split (or the frozen test split) is rejected: it would leak that row's answer into training."""
    real = [i for i, origin in enumerate(tally.origins) if origin is None]
    assignment = split_indices([tally.labels[i] for i in real], cfg.val_ratio, test_ratio, cfg.seed)
    assignment = {name: [real[j] for j in indices] for name, indices in assignment.items()}
    protected = {tally.keys[i]: name for name in ("val", "test") for i in assignment[name]}
    protected.update({key: "frozen test" for key in frozen_keys})
    leaks = {}
    for i, origin in enumerate(tally.origins):
        if origin is None:
            continue
        if origin and origin in protected:
            leaks[i] = f"a paraphrase of a seed row that is in the {protected[origin]} split"
        else:
            assignment["train"].append(i)
    assignment["train"].sort()
    if leaks:
        tally.rules["test_leakage"] += len(leaks)
        tally.synthetic_rules["test_leakage"] += len(leaks)
    return assignment, leaks


def _write_splits(out: Path, spool_path: Path, assignment: dict[str, list[int]], frozen: list[dict],
                  leaks: dict[int, str] | None = None, rejected_path: Path | None = None) -> dict[str, int]:
    """Copy each spooled row to its split file (as often as data.mix drew it; unused.jsonl when it did not),
    then the frozen test rows; synthetic rows that leak go to rejected.jsonl. Returns rows per split."""
    folder, places = DataDir(out), defaultdict(list)
    for name, indices in assignment.items():
        for i in indices:
            places[i].append(name)
    paths = {name: folder.split(name) for name in SPLITS} | ({"unused": folder.unused} if "unused" in assignment else {})
    handles = {name: open(path, "wb") for name, path in paths.items()}  # bytes: the spool's lines are UTF-8 JSON
    try:
        with open(spool_path, "rb") as spool, open(rejected_path or os.devnull, "ab") as rejected:
            for i, line in enumerate(spool):
                if leaks and i in leaks:
                    row = json.loads(line)
                    meta = row["metadata"]
                    record = {"source": meta["file"], "line": meta["line"], "rule": "test_leakage", "field": None,
                              "reason": f"{leaks[i]} ({meta.get('seed_row', 'seed')})", "row": row}
                    rejected.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
                for name in places[i]:
                    handles[name].write(line)
        for row in frozen:
            handles["test"].write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    finally:
        for handle in handles.values():
            handle.close()
    spool_path.unlink()
    counts = {name: len(assignment[name]) for name in SPLITS}
    counts["test"] += len(frozen)
    return counts


def _drop_if_reviewed(result, dropped: dict[tuple[str, str], str], review: Path) -> None:
    comment = dropped.get((str(result.source), str(result.line)))
    if comment is not None:
        result.rejection = {"source": result.source, "line": result.line, "rule": "reviewer_drop", "field": None,
                            "reason": f"a reviewer marked it drop in {review}" + (f": {comment}" if comment else ""),
                            "row": json.loads(result.row_json)}


def _drop_if_duplicate(result, cfg: DataConfig, seen: dict[str, str], near: NearDuplicateIndex | None, clusters: dict) -> None:
    """Keep the first copy: a row matching an earlier kept row (or the frozen test split) is rejected."""
    where = f"{result.source}:{result.line}"
    kept_at, reason = None, ""
    if cfg.dedup.exact and result.key in seen:
        kept_at = seen[result.key]
        reason = f"exact duplicate of {kept_at}"
    elif near is not None:
        match = near.find_or_add(where, sketch=result.sketch)
        if match:
            kept_at = match[0]
            reason = f"near duplicate (Jaccard ~{match[1]:.2f}) of {kept_at}"
    if kept_at is None:
        seen.setdefault(result.key, where)
        return
    rule = "test_leakage" if kept_at.startswith("frozen test") else ("duplicate" if reason.startswith("exact") else "near_duplicate")
    clusters[kept_at].append(where)
    # The row as it would have been kept (cleaned, PII redacted), so the user can compare the two copies.
    row = json.loads(result.row_json)
    result.rejection = {"source": result.source, "line": result.line, "rule": rule, "reason": reason, "field": None, "row": row}


def _index_frozen_test(path: Path, seen: dict[str, str], near: NearDuplicateIndex | None) -> list[dict]:
    """Index an earlier round's test split first, so new rows that match it are rejected as leakage."""
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        where = f"frozen test {path}:{number}"
        text = dedup_text(row)
        seen.setdefault(exact_key(text), where)
        if near is not None:
            near.find_or_add(where, text)
    console.print(f"frozen test split: {len(rows)} rows from {path}")
    return rows


def _leakage(assignment: dict[str, list[int]], keys: list[str]) -> dict:
    """Exact-duplicate overlap between splits, counted (near duplicates are removed before the split)."""
    sets = {name: {keys[i] for i in indices} for name, indices in assignment.items()}
    return {
        "train_test": len(sets["train"] & sets["test"]), "train_val": len(sets["train"] & sets["val"]),
        "val_test": len(sets["val"] & sets["test"]),
        "method": "exact and near duplicates are removed across all inputs (and the frozen test split) before splitting",
    }


def _token_summary(assignment: dict[str, list[int]], lengths: list[int | None], max_tokens: int | None, truncated: int) -> dict | None:
    if not lengths or lengths[0] is None:
        return None
    summary = {"max_tokens": max_tokens, "truncated": truncated}
    for name, indices in assignment.items():
        values = sorted(lengths[i] for i in indices)
        if values:
            summary[name] = {"min": values[0], "median": values[len(values) // 2], "p95": values[int(0.95 * (len(values) - 1))], "max": values[-1]}
    return summary
