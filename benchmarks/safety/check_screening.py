"""Check the harmful-content screen on text it has never seen: recall on offensive rows, false positives on
ordinary support text.

    .venv/bin/python benchmarks/safety/check_screening.py [--thresholds 0.5 0.7 0.9]

- heldout_offensive.jsonl: 70 offensive or abusive support-style messages written for this check (not taken
  from the classifier's training data, and written after the default blocklist), each with its kind;
- heldout_ordinary.jsonl: 50 ordinary support messages chosen to be hard (violent-sounding jargon, angry but
  clean complaints, identity words, mild profanity), each with its kind;
- the shipped examples (examples/**/*.jsonl): every message of every row; a row counts as flagged when any
  of its messages is.
Neither held-out file is read by the test suite. Prints markdown tables: recall / flagged share per kind, for
the classifier alone and with the default blocklist, at each threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from shipped_text import ROOT, messages  # noqa: E402
from tuneloop.config import SafetyConfig  # noqa: E402
from tuneloop.safety import Screen  # noqa: E402


def by_kind(path: Path) -> dict[str, list[str]]:
    kinds = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        kinds[row["kind"]].append(row["text"])
    return dict(kinds)


def example_rows() -> dict[str, list[list[str]]]:
    rows = {}
    for path in sorted((ROOT / "examples").rglob("*.jsonl")):
        found = []
        for line in path.read_text().splitlines():
            try:
                found.append(messages(json.loads(line)))
            except json.JSONDecodeError:
                continue  # the ticket example's deliberately malformed line
        rows[str(path.relative_to(ROOT))] = found
    return rows


def flagged(screen: Screen, texts: list[str]) -> list[bool]:
    return [flag is not None for flag in screen(texts)]


def share(hits: list[bool]) -> str:
    return f"{sum(hits)}/{len(hits)} ({sum(hits) / len(hits):.0%})" if hits else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = parser.parse_args()
    offensive, ordinary, examples = by_kind(HERE / "heldout_offensive.jsonl"), by_kind(HERE / "heldout_ordinary.jsonl"), example_rows()
    setups = [(f"classifier >= {t:g}", SafetyConfig(threshold=t, default_blocklist=False)) for t in args.thresholds]
    setups += [(f"classifier >= {t:g} + default list", SafetyConfig(threshold=t)) for t in args.thresholds]
    setups.append(("default list alone", SafetyConfig(threshold=None)))
    screens = [(name, Screen(cfg)) for name, cfg in setups]
    header = "| set | kind | n | " + " | ".join(name for name, _ in screens) + " |"
    rule = "|" + " --- |" * (3 + len(screens))
    print("Recall on held-out offensive messages (higher is better):\n")
    print(header + "\n" + rule)
    every = [text for texts in offensive.values() for text in texts]
    for kind, texts in [*offensive.items(), ("all", every)]:
        print(f"| offensive | {kind} | {len(texts)} | " + " | ".join(share(flagged(s, texts)) for _, s in screens) + " |")
    print("\nFalse positives on ordinary support text (lower is better):\n")
    print(header + "\n" + rule)
    every = [text for texts in ordinary.values() for text in texts]
    for kind, texts in [*ordinary.items(), ("all", every)]:
        print(f"| hard ordinary | {kind} | {len(texts)} | " + " | ".join(share(flagged(s, texts)) for _, s in screens) + " |")
    for name, rows in examples.items():
        cells = []
        for _, s in screens:
            hits = iter(flagged(s, [text for row in rows for text in row]))
            cells.append(share([any([next(hits) for _ in row]) for row in rows]))
        print(f"| shipped rows | {name} | {len(rows)} | " + " | ".join(cells) + " |")
    default = Screen(SafetyConfig())
    print(f"\nWith the default settings (classifier >= {SafetyConfig().threshold:g} + default list), flagged ordinary texts:")
    texts = [t for ts in ordinary.values() for t in ts] + [t for rows in examples.values() for row in rows for t in row]
    for text, flag in zip(texts, default(texts)):
        if flag:
            print(f"- {flag}: {text[:100]!r}")
    print("\nand missed offensive ones:")
    for kind, texts in offensive.items():
        for text, flag in zip(texts, default(texts)):
            if flag is None:
                print(f"- {kind}: {text[:100]!r}")

if __name__ == "__main__":
    main()
