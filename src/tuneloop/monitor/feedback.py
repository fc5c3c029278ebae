"""Feedback -> training data: corrected and well-rated interactions become rows in the canonical form.

A correction wins over the logged response; a response rated "up" (or scored at least `min_score`)
is kept as it was; anything else (rated down without a correction, no logged request) is counted
and skipped. Every text is PII-redacted (tuneloop.pii, as the data stage does) before it is written, and
the data stage validates and deduplicates the file again when the next round prepares it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tuneloop.config import PiiConfig
from tuneloop.monitor.sources import Traffic
from tuneloop.pii import PII_TYPES, Redactor


def feedback_rows(feedback: list[dict[str, Any]], min_score: float = 0.8) -> tuple[list[dict], Counter]:
    """Chat rows (`{"id", "messages", "metadata"}`) from feedback records with their requests; and what was skipped, by reason."""
    rows, skipped, seen = [], Counter(), set()
    for item in reversed(feedback):  # the newest judgement of a request counts
        request = item.get("request")
        if request is None:
            skipped["request not in the log"] += 1
            continue
        if request["id"] in seen:
            skipped["older feedback on the same request"] += 1
            continue
        seen.add(request["id"])
        answer = item.get("corrected") or (request.get("response") if _approved(item, min_score) else None)
        if answer is None:
            skipped["not approved and not corrected"] += 1
            continue
        if not answer.strip():
            skipped["approved answer is empty"] += 1
            continue
        prompt = _conversation(request.get("request") or {})
        if not prompt:
            skipped["request has no prompt"] += 1
            continue
        rows.append({"id": request["id"], "messages": [*prompt, {"role": "assistant", "content": answer}],
                     "metadata": {"model": request["model"], "feedback": "corrected" if item.get("corrected") else "approved"}})
    return rows[::-1], skipped


def export_feedback(traffic: Traffic, out: Path, *, since: dt.datetime | None = None, min_score: float = 0.8,
                    pii: PiiConfig | None = None) -> dict[str, Any]:
    """Write the feedback data set to `out` (JSONL); returns counts."""
    rows, skipped = feedback_rows(traffic.feedback(since), min_score)
    pii = pii or PiiConfig()
    redacted = Counter()
    if pii.enabled:
        redactor = Redactor(pii.types or PII_TYPES, pii.placeholders)
        for row in rows:
            for message in row["messages"]:
                message["content"], found = redactor.redact(message["content"])
                redacted.update(found)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as sink:
        sink.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    kinds = Counter(row["metadata"]["feedback"] for row in rows)
    return {"out": str(out), "rows": len(rows), "corrected": kinds["corrected"], "approved": kinds["approved"],
            "skipped": dict(skipped), "pii_redacted": dict(redacted)}


def _approved(item: dict, min_score: float) -> bool:
    return item.get("rating") == "up" or (item.get("score") is not None and item["score"] >= min_score)


def _conversation(body: dict) -> list[dict[str, str]]:
    """The request's messages (chat) or its prompt as one user message (completions)."""
    if body.get("messages"):
        return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else "".join(part.get("text", "") for part in m["content"])} for m in body["messages"]]
    prompt = body.get("prompt")
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) and prompt.strip() else []
