"""Derive preference pairs (prompt / chosen / rejected) from tickets.jsonl for the DPO example.

The chosen answer is the ticket's reference JSON; the rejected one is a typical failure of a small
model on this task: the wrong category, the JSON wrapped in a Markdown fence, or a prose reply.

    python examples/ticket_triage/make_preferences.py   # rewrites preferences.jsonl beside it
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
CATEGORIES = ["billing", "shipping", "returns", "technical", "account"]


def rejected_answer(rng: random.Random, answer: str) -> str:
    fields = json.loads(answer)
    kind = rng.choice(["wrong_category", "fenced", "prose"])
    if kind == "wrong_category":
        fields["category"] = rng.choice([c for c in CATEGORIES if c != fields["category"]])
        return json.dumps(fields)
    if kind == "fenced":
        return f"```json\n{json.dumps(fields, indent=2)}\n```"
    return f"This looks like a {fields['category']} issue with {fields['priority']} priority: {fields['summary']}."


def main(n: int = 240, seed: int = 0) -> None:
    rng = random.Random(seed)
    pairs = []
    for line in (HERE / "tickets.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
            user, assistant = row["messages"]
            json.loads(assistant["content"])
        except (ValueError, KeyError, TypeError):
            continue  # the data stage's planted malformed rows
        pairs.append({"prompt": [user], "chosen": [assistant],
                      "rejected": [{"role": "assistant", "content": rejected_answer(rng, assistant["content"])}]})
        if len(pairs) == n:
            break
    (HERE / "preferences.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))


if __name__ == "__main__":
    main()
