"""From a teacher's reply to rows: parse the JSON it was asked for, make chat rows, mark their origin; and
the optional judge that scores each row on the same endpoint."""

from __future__ import annotations

import json
import re
import threading

from tuneloop.config import TaskConfig
from tuneloop.data.synth.plan import Request
from tuneloop.data.synth.teacher import Teacher

PROMPT_VERSION = "v1"  # bump when plan.py's prompts change, so rows say which prompt wrote them
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse(request: Request, content: str) -> tuple[list[tuple[str, str]], str | None]:
    """([(input, answer)], None) or ([], why the reply is unusable)."""
    if request.kind == "answer":
        answer = content.strip()
        return ([(request.input, answer)], None) if answer else ([], "an empty answer")
    try:
        value = json.loads(FENCE.sub("", content.strip()))
    except json.JSONDecodeError as err:
        return [], f"not JSON ({err.msg} at column {err.colno}): {content[:120]!r}"
    if request.kind == "paraphrase":
        items = value.get("inputs") if isinstance(value, dict) else None
        if not isinstance(items, list):
            return [], 'no "inputs" list in the reply'
        pairs = [(text.strip(), request.seed.answer) for text in items if isinstance(text, str) and text.strip()]
    else:
        items = value.get("examples") if isinstance(value, dict) else None
        if not isinstance(items, list):
            return [], 'no "examples" list in the reply'
        pairs = [(item["input"].strip(), _answer_text(item["answer"])) for item in items
                 if isinstance(item, dict) and isinstance(item.get("input"), str) and item["input"].strip() and "answer" in item]
    return (pairs, None) if pairs else ([], "the reply holds no usable row")


def make_row(request: Request, text: str, answer: str, teacher: Teacher) -> dict:
    meta = {"source": "synthetic", "kind": request.kind, "teacher": teacher.cfg.base_url, "teacher_model": teacher.cfg.model,
            "prompt": f"{request.kind}/{PROMPT_VERSION}", "request": request.key}
    if request.seed is not None:
        meta.update(seed=request.seed.key, seed_row=request.seed.where)
    if request.shots:
        meta["shots"] = request.shots
    if request.where:
        meta["input_row"] = request.where
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}], "metadata": meta}


def judge(teacher: Teacher, task: TaskConfig, row: dict) -> tuple[float | None, int]:
    """(score in [0, 1] or None when the judge gave none, tokens spent)."""
    user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
    instructions = f"The assistant's instructions: {task.system_prompt}\n\n" if task.system_prompt else ""
    prompt = (f"{instructions}Input:\n{user}\n\nAnswer:\n{assistant}\n\nIs this a realistic input, and is the answer "
              'correct and complete for it? Score from 0 (unusable) to 10 (perfect). Reply as JSON: {"score": n}.')
    schema = {"type": "object", "additionalProperties": False, "required": ["score"],
              "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}}}
    reply = teacher.ask([{"role": "user", "content": prompt}], schema, temperature=0.0)
    if reply is None or reply.content is None:
        return None, reply.tokens if reply else 0
    try:
        score = json.loads(FENCE.sub("", reply.content.strip()))["score"]
        return min(max(float(score) / 10, 0.0), 1.0), reply.tokens
    except (ValueError, KeyError, TypeError):
        return None, reply.tokens


_EMBED = threading.Lock()  # one encoder, many request threads


def similarity(texts: list[str], references: list[str]) -> list[float]:
    """Each text's cosine similarity to its closest reference (the embedded MiniLM)."""
    if not texts or not references:
        return [1.0] * len(texts)
    from tuneloop.models.embed import embed

    with _EMBED:
        vectors, anchors = embed(texts), embed(references)
    return [float(v) for v in (vectors @ anchors.T).max(axis=1)]


def _answer_text(answer) -> str:
    return answer.strip() if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
