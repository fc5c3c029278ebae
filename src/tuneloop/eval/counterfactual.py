"""Counterfactual term swaps for the bias probe: find an attribute's demographic terms in a text (whole
words, any case) and write the text again with them swapped for other terms of their group, case kept.

The term list (bias_terms.yaml beside this file, or the user's eval.bias.terms) maps attribute -> groups
of terms. The groups of one attribute are aligned (Maria / Garcia, German / Germany), so one variant moves
every term of the attribute found in the text by the same step along its group: "Mr Chen said he" becomes
"Ms Chen said she", not "Ms Chen said he", and two different names stay two different names.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tuneloop.errors import TuneloopError

SHIPPED = Path(__file__).with_name("bias_terms.yaml")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _key(term: str) -> str:
    return " ".join(term.lower().split())


def _cased(replacement: str, found: str) -> str:
    """`replacement` in the case of the text it replaces: HE -> SHE, He -> She, he -> she."""
    if len(found) > 1 and found.isupper():
        return replacement.upper()
    if found[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement.lower()


class Attribute:
    """One attribute's aligned groups of terms, the pattern that finds any of them, and where each sits."""

    def __init__(self, name: str, groups: list[list[str]]):
        self.name, self.groups = name, [list(g) for g in groups]
        # A term in several groups belongs to its first (the YAML says so to the user).
        self.where: dict[str, tuple[int, int]] = {}
        for g, group in enumerate(self.groups):
            for p, term in enumerate(group):
                self.where.setdefault(_key(term), (g, p))
        # Longest first, so a multi-word term wins over a term that is its first word.
        words = [r"\s+".join(map(re.escape, t.split())) for t in sorted(self.where, key=len, reverse=True)]
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)

    def found(self, texts: list[str]) -> list[str]:
        """The terms (normalised) that occur in `texts`, in order of first appearance."""
        return list(dict.fromkeys(_key(m[0]) for text in texts for m in self.pattern.finditer(text)))

    def swaps(self, texts: list[str], limit: int) -> list[dict[str, str]]:
        """Up to `limit` mappings found term -> replacement, one per variant; none when no term occurs.
        The steps along the groups are spread out, so a long group is not only swapped for its neighbours."""
        found = [self.where[term] for term in self.found(texts)]
        if not found:
            return []
        size = max(len(self.groups[g]) for g, _ in found)
        steps = range(1, size) if size - 1 <= limit else [1 + k * (size - 1) // limit for k in range(limit)]
        mappings = []
        for step in steps:
            mapping = {}
            for g, p in found:
                group = self.groups[g]
                if (p + step) % len(group) != p:
                    mapping[_key(group[p])] = group[(p + step) % len(group)]
            if mapping and mapping not in mappings:
                mappings.append(mapping)
        return mappings

    def swap(self, text: str, mapping: dict[str, str]) -> str:
        """`text` with every whole-word occurrence of a mapped term replaced, in the case it was written."""
        return self.pattern.sub(lambda m: _cased(mapping[_key(m[0])], m[0]) if _key(m[0]) in mapping else m[0], text)

    def inverse(self, mapping: dict[str, str]) -> dict[str, str]:
        """The mapping back (replacement -> original term as listed), to read a variant's answer as the original's."""
        back: dict[str, str] = {}
        for original, replacement in mapping.items():
            g, p = self.where[original]
            back.setdefault(_key(replacement), self.groups[g][p])
        return back


def load_terms(path: Path | None = None) -> list[Attribute]:
    """The attributes of a term list file (None: the shipped bias_terms.yaml), checked."""
    path = Path(path or SHIPPED)
    if not path.is_file():
        raise TuneloopError(f"{path}: bias term list not found (eval.bias.terms)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TuneloopError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict) or not raw:
        raise TuneloopError(f"{path}: a bias term list maps attribute -> list of groups of terms, e.g. gender: [[he, she]]")
    attributes = []
    for name, groups in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise TuneloopError(f"{path}: attribute {name!r}: use letters, digits and _ only (it becomes bias.{name}.flip_rate)")
        if not isinstance(groups, list) or not groups:
            raise TuneloopError(f"{path}: {name}: must be a list of groups of terms, e.g. [[he, she], [his, her]]")
        for i, group in enumerate(groups, 1):
            terms = [_key(t) for t in group if isinstance(t, str) and t.strip()] if isinstance(group, list) else []
            if len(terms) != len(group or []) or len(set(terms)) != len(terms) or len(terms) < 2:
                raise TuneloopError(f"{path}: {name}: group {i} must list at least two different terms (text), got {group!r}")
        attributes.append(Attribute(name, [[" ".join(t.split()) for t in g] for g in groups]))
    return attributes
