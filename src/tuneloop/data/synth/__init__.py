"""`tuneloop data synth`: new training rows from a teacher model behind an OpenAI-compatible endpoint.

Reads top to bottom: seeds (cleaned and PII-redacted like the data stage) -> a deterministic plan of
requests (paraphrases, new inputs per label, answers for unlabeled inputs) -> the requests not done by an
earlier run, `concurrency` at a time, within the budget -> rows appended to FILE as each request ends ->
report. The rows are raw material: `tuneloop data prepare` (data.synthetic / --synthetic) validates them,
puts them in the train split only, and rejects any that duplicate a real row or paraphrase a val/test row.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tuneloop.artifacts import write_json
from tuneloop.config import DataConfig, SynthConfig, TaskConfig
from tuneloop.data.synth.journal import Journal
from tuneloop.data.synth.plan import Request, plan
from tuneloop.data.synth.rows import judge, make_row, parse, similarity
from tuneloop.data.synth.seeds import read_seeds, read_unlabeled
from tuneloop.data.synth.teacher import Budget, Teacher
from tuneloop.errors import TuneloopError
from tuneloop.layout import SynthFile
from tuneloop.ui import console, progress


def synthesise(data: DataConfig, task: TaskConfig, out: Path) -> dict:
    """Write synthetic rows to `out` (continuing a partial file); returns the report (also FILE.report.json)."""
    started, cfg, out = time.time(), data.synth, Path(out)
    seeds, skipped = read_seeds(cfg.seeds or data.inputs, data, task)
    unlabeled = read_unlabeled(cfg.unlabeled, data, task)
    requests, notes = plan(seeds, unlabeled, cfg, task)
    if not requests:
        raise TuneloopError("nothing to ask the teacher: no usable seed rows (data.synth.seeds or data.inputs) and no "
                            "unlabeled inputs (data.synth.unlabeled)" + (f"; skipped seeds: {skipped[0].where}: {skipped[0].reason}" if skipped else ""))
    journal = Journal(out)
    todo = [r for r in requests if r.key not in journal.done]
    budget = Budget(cfg.max_requests, cfg.max_total_tokens, *journal.used())
    teacher = Teacher(cfg.teacher, budget, cfg.seed)
    console.print(f"{len(seeds)} seeds ({len(skipped)} skipped), {len(unlabeled)} unlabeled inputs -> {len(requests)} requests, "
                  f"{len(requests) - len(todo)} done earlier; teacher {cfg.teacher.model} at {cfg.teacher.base_url}")
    now = Counter()
    try:
        with progress() as bar, ThreadPoolExecutor(cfg.teacher.concurrency) as pool:
            bar_id = bar.add_task("synth", total=len(requests), completed=len(requests) - len(todo), info="")
            futures = [pool.submit(_one, request, teacher, task, cfg, i) for i, request in enumerate(todo)]
            for future in as_completed(futures):
                outcome = future.result()
                if outcome is None:
                    now["skipped_budget"] += 1
                    continue
                rows, rejected, record = outcome
                if record["status"] == "failed":  # not recorded: a rerun asks again
                    now["failed"] += 1
                    last_error = record["error"]
                    if now["failed"] >= 2 * cfg.teacher.concurrency and not now["done"]:
                        for pending in futures:
                            pending.cancel()
                        raise TuneloopError(f"the teacher fails every request ({now['failed']} so far), e.g. {last_error}; "
                                            f"check data.synth.teacher (base_url {cfg.teacher.base_url}, model, api_key_env)")
                    continue
                journal.record(rows, rejected, record)
                now["done"] += 1
                now[record["status"]] += 1
                bar.update(bar_id, advance=1, info=f"{journal.written:,} rows")
    finally:
        journal.close()
        teacher.close()
    report = _report(out, cfg, journal, now, budget, seeds, skipped, unlabeled, requests, notes, started)
    write_json(SynthFile(out).report, report)
    return report


def _one(request: Request, teacher: Teacher, task: TaskConfig, cfg: SynthConfig, index: int) -> tuple[list, list, dict] | None:
    """Ask, parse, judge: (rows, judged-out rows, record), or None when the budget was spent before asking."""
    reply = teacher.ask(request.messages, request.schema, seed=cfg.seed * 1_000_003 + index)
    if reply is None:
        return None
    record = {"key": request.key, "kind": request.kind, "asked": request.n, "returned": 0, "rows": 0, "too_short": 0, "off_topic": 0,
              "judged_out": 0,
              "tokens": reply.tokens, "requests": 1, "attempts": reply.attempts, "status": "ok", "error": reply.error}
    if reply.content is None:
        record["status"] = "failed"
        return [], [], record
    pairs, problem = parse(request, reply.content)
    if problem:
        record.update(status="unparsed", error=problem)
        return [], [], record
    rows, rejected = [], []
    close = similarity([text for text, _ in pairs], request.references) if cfg.min_similarity is not None else [1.0] * len(pairs)
    for (text, answer), score in zip(pairs, close):
        row = make_row(request, text, answer, teacher)
        dropped = _filtered(text, score, request, cfg)
        if dropped is None and cfg.judge_threshold is not None:
            judged, tokens = judge(teacher, task, row)
            record["tokens"] += tokens
            record["requests"] += 1
            row["metadata"]["judge_score"] = judged
            if judged is None or judged < cfg.judge_threshold:
                why = "the judge gave no score" if judged is None else f"judge score {judged:.1f} < threshold {cfg.judge_threshold:g}"
                dropped = ("judge_score", why)
        if dropped is not None:
            rejected.append({"rule": dropped[0], "reason": dropped[1], "row": row})
            record[COUNTED[dropped[0]]] += 1
            continue
        rows.append(row)
    record.update(returned=len(pairs), rows=len(rows))
    return rows, rejected, record


COUNTED = {"too_short": "too_short", "off_topic": "off_topic", "judge_score": "judged_out"}  # rule -> record field


def _filtered(text: str, similarity_score: float, request: Request, cfg: SynthConfig) -> tuple[str, str] | None:
    """(rule, reason) when a row is too short or strays from its seed / examples; None when it stays."""
    words = len(text.split())
    if words < cfg.min_words:
        return "too_short", f"{words} words < min_words {cfg.min_words}"
    if cfg.min_similarity is not None and similarity_score < cfg.min_similarity:
        return "off_topic", (f"similarity {similarity_score:.2f} to the {'seed' if request.seed else 'closest example'} "
                             f"< min_similarity {cfg.min_similarity:g}")
    return None


def _report(out, cfg, journal, now, budget, seeds, skipped, unlabeled, requests, notes, started) -> dict:
    records = list(journal.done.values())
    total = Counter()
    for record in records:
        total.update({k: record.get(k, 0) for k in ("asked", "returned", "rows", "too_short", "off_topic", "judged_out")})
    written = journal.rows_written()
    if not written == total["rows"] == journal.written:
        raise RuntimeError(f"bug: {out} holds {written} rows but its requests recorded {total['rows']} ({journal.written} counted)")
    return {
        "out": str(out), "requests_file": str(journal.requests), "rejected_file": str(journal.rejected),
        "teacher": {"base_url": cfg.teacher.base_url, "model": cfg.teacher.model},
        "seeds": {"used": len(seeds), "skipped": len(skipped), "skipped_why": dict(Counter(s.reason for s in skipped)),
                  "unlabeled_inputs": len(unlabeled)},
        "requests": {"planned": len(requests), "done": len(records), "done_this_run": now["done"],
                     "by_status": dict(Counter(r["status"] for r in records)), "failed_this_run": now["failed"],
                     "not_sent_budget": now["skipped_budget"], "removed_unrecorded_rows": journal.removed},
        # asked = returned + lost in replies; returned = written + too_short + off_topic + judged_out; written = lines in the file
        "rows": {"asked": total["asked"], "returned": total["returned"], "too_short": total["too_short"], "off_topic": total["off_topic"],
                 "judged_out": total["judged_out"], "written": written},
        "budget": {"requests": budget.requests, "tokens": budget.tokens, "max_requests": cfg.max_requests,
                   "max_total_tokens": cfg.max_total_tokens, "exhausted": budget.exhausted()},
        "notes": notes, "wall_s": round(time.time() - started, 1),
    }
