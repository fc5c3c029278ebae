"""The data stage's harmful-content rule (`data.safety`): every message of a row, input and answer, through
the shared screen (tuneloop/safety), a chunk of rows at a time.

A row with a flagged message is rejected with rule `harmful_content` (mode `reject`), its record naming the
message, and the classifier's score or the blocklist term; with mode `warn` it is kept, and counted in the
report. The task's system prompt, which tuneloop adds to every row, is not screened (a row's own is), nor
is the rejected answer of a preference pair (an offensive rejected answer is what preference data teaches
against). Tool-call arguments are not screened; tool results are.
"""

from __future__ import annotations

import orjson

from tuneloop.config import SafetyConfig
from tuneloop.safety import Screen

RULE = "harmful_content"


class HarmfulContent:
    def __init__(self, cfg: SafetyConfig, system_prompt: str | None):
        self.mode, self.system_prompt = cfg.mode, system_prompt
        self.screen = Screen(cfg)

    def texts(self, row: dict) -> list[tuple[str, str, str]]:
        """(field, role, text) of every non-empty message of a canonical row, in order."""
        if "messages" in row:
            parts = [(f"messages[{i}]", m) for i, m in enumerate(row["messages"])]
        else:
            # Not the rejected answer of a preference pair: teaching the model not to say it is the point.
            parts = [(f"{key}[{i}]", m) for key in ("prompt", "chosen") for i, m in enumerate(row[key])]
        return [(f"{where}.content", m["role"], m["content"]) for where, m in parts
                if m.get("content") and not (m["role"] == "system" and m["content"] == self.system_prompt)]

    def check(self, outcomes: list) -> None:
        """Screen the outcomes' stashed texts (`outcome.screened`) in one batch; flag, and reject when asked."""
        pending = [(outcome, part) for outcome in outcomes if outcome.screened for part in outcome.screened]
        flags = self.screen([text for _, (_, _, text) in pending])
        found: dict[int, list[tuple]] = {}
        for (outcome, (field, role, _)), flag in zip(pending, flags):
            outcome.screened = None
            if flag is not None:
                found.setdefault(id(outcome), [outcome]).append((field, role, flag))
        for outcome, *hits in found.values():
            field, _, first = hits[0]
            reason = "; ".join(f"the {role} message {where}: {flag}" for where, role, flag in hits)
            outcome.harmful = {"field": field, "detector": first.rule, "reason": reason}
            if self.mode == "reject":
                outcome.rejection = {"source": outcome.source, "line": outcome.line, "rule": RULE, "reason": reason,
                                     "field": field, "row": orjson.loads(outcome.row_json)}
                outcome.row_json = outcome.key = outcome.normalised = None


class HarmfulTally:
    """What the report says of the screen: rows flagged, by detector, and where the kept ones are (warn)."""

    def __init__(self, shown: int = 20):
        self.flagged, self.rejected, self.shown = 0, 0, shown
        self.by_detector: dict[str, int] = {}
        self.kept: list[dict] = []
        self.kept_count = 0

    def add(self, result) -> None:
        """A flagged row's outcome, after the main process's own rules (a kept row has no rejection)."""
        self.flagged += 1
        detector = result.harmful["detector"]
        self.by_detector[detector] = self.by_detector.get(detector, 0) + 1
        if result.rejection is None:
            self.kept_count += 1
            if len(self.kept) < self.shown:
                self.kept.append({"where": f"{result.source}:{result.line}", "field": result.harmful["field"],
                                  "reason": result.harmful["reason"]})
        elif result.rejection["rule"] == RULE:
            self.rejected += 1

    def report(self, cfg: SafetyConfig) -> dict:
        return {"mode": cfg.mode, "threshold": cfg.threshold, "flagged": self.flagged, "rejected": self.rejected,
                "kept": self.kept_count, "by_detector": self.by_detector, "kept_examples": self.kept,
                "screen": "tuneloop.safety: alt-profanity-check's classifier (English) + blocklists"}
