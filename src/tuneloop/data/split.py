"""Seeded train/val/test split, stratified by a label when one is given."""

from __future__ import annotations

import random
from collections import defaultdict


def split_indices(
    labels: list[str | None], val_ratio: float, test_ratio: float, seed: int
) -> dict[str, list[int]]:
    """Indices per split; each label group is split by the ratios so every split keeps its mix."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    rng = random.Random(seed)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in sorted(groups, key=str):
        members = groups[label]
        rng.shuffle(members)
        n_test = round(len(members) * test_ratio)
        n_val = round(len(members) * val_ratio)
        splits["test"] += members[:n_test]
        splits["val"] += members[n_test : n_test + n_val]
        splits["train"] += members[n_test + n_val :]
    for indices in splits.values():
        indices.sort()  # keep input order inside a split: diffs between runs stay readable
    return splits
