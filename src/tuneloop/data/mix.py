"""`data.mix`: the train split drawn from its sources in given shares, seeded, with or without replacement.

Only the train split is mixed: val and test keep every row they get, since they measure the model, not
teach it. Sources are input files (`data.inputs`, `data.synthetic`, `data.replay`); those `mix.ratios` does
not name share what is left in proportion to their rows. Without replacement the mix is as large as the
scarcest source allows (or `mix.rows`, clipped to what each source has); with replacement `mix.rows` rows
are drawn and a source repeats its rows (each as evenly as possible) to reach its share. Kept rows that are
not drawn go to unused.jsonl: they are not errors, and nothing is lost.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tuneloop.config import MixConfig
from tuneloop.errors import TuneloopError

REST = "(other sources)"


def draw(train: list[int], sources: list[str], cfg: MixConfig) -> tuple[list[int], list[int], dict]:
    """(train indices drawn, repeats included, in order; kept train indices not drawn; the mix report)."""
    named = {str(Path(path).resolve()): share for path, share in cfg.ratios.items()}
    groups: dict[str, list[int]] = {}
    for index in train:
        resolved = str(Path(sources[index]).resolve())
        groups.setdefault(resolved if resolved in named else REST, []).append(index)
    notes = [f"{path}: named in data.mix.ratios but gave no train rows (duplicates of other inputs, or rejected); "
             "the other shares are scaled up" for path in named if path not in groups]
    if not groups:
        raise TuneloopError("data.mix: no train rows to draw from")
    shares = {group: named.get(group, 0.0) for group in groups}
    if REST in groups:
        shares[REST] = max(0.0, 1.0 - sum(named.values()))
    total = sum(shares.values())
    if total == 0:  # only unnamed sources gave rows, and the named shares left them nothing: they take it all
        shares, total = {group: 1.0 for group in groups}, float(len(groups))
    shares = {group: share / total for group, share in shares.items()}
    available = {group: len(rows) for group, rows in groups.items()}
    rows = _size(available, shares, cfg)
    wanted = _apportion(rows, shares)
    rng = random.Random(cfg.seed)
    drawn: list[int] = []
    for group in sorted(groups):
        members, n = groups[group], wanted[group]
        if n > len(members) and not cfg.replace:
            notes.append(f"{group}: {n} rows wanted, {len(members)} available (mix.replace: true draws repeats)")
            n = len(members)
        drawn += members * (n // len(members)) + rng.sample(members, n % len(members))  # whole copies, then a sample
    copies = Counter(drawn)
    unused = [i for i in train if i not in copies]
    report = {"ratios": {group: round(share, 4) for group, share in sorted(shares.items())}, "replace": cfg.replace,
              "seed": cfg.seed, "available": dict(sorted(available.items())),
              "drawn": {group: sum(copies[i] for i in groups[group]) for group in sorted(groups)},
              "rows": len(drawn), "repeated": sum(n - 1 for n in copies.values()), "unused": len(unused), "notes": notes}
    report["drawn_ratio"] = {group: round(n / max(len(drawn), 1), 4) for group, n in report["drawn"].items()}
    return sorted(drawn), unused, report


def _size(available: dict[str, int], shares: dict[str, float], cfg: MixConfig) -> int:
    if cfg.rows is not None:
        return cfg.rows
    if cfg.replace:
        return sum(available.values())  # the train split's own size, in the given shares
    return min(int(available[group] / share) for group, share in shares.items() if share > 0)


def _apportion(rows: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer rows per group summing to `rows` (largest remainders)."""
    exact = {group: rows * share for group, share in shares.items()}
    counts = {group: int(value) for group, value in exact.items()}
    for group in sorted(exact, key=lambda g: (counts[g] - exact[g], g))[: rows - sum(counts.values())]:
        counts[group] += 1
    return counts
