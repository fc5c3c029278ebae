"""Word and phrase lists for the harmful-content screen: whole-word, case-insensitive matching.

A list file has one term or phrase per line; blank lines and lines starting with `#` are skipped. A phrase
matches across any run of whitespace, and a straight apostrophe matches a curly one too. Terms may hold
punctuation (`f*ck`, `a$$hole`): "whole word" means no letter or digit touches the match on either side.
Allow-list terms are blanked out of a text before anything else looks at it, so a product name or a phrase
that trips the classifier or a list ("Dick's Sporting Goods") is never flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tuneloop.errors import TuneloopError

DEFAULT = Path(__file__).with_name("data") / "blocklist.txt"


def read_terms(path: Path) -> list[str]:
    """The terms of a list file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TuneloopError(f"blocklist {path}: cannot read it ({err}); give a UTF-8 text file, one term per line") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def compile_terms(terms: Iterable[str]) -> re.Pattern | None:
    """One pattern for every (lowercased) term, None for none. The alternatives are merged into a trie
    (`kill (?:yourself|you)`): Python tries a flat alternation one term after another at every position,
    which cost ~40 us per 100-character text for the default list; the trie costs a few."""
    trie: dict = {}
    for term in terms:
        units = [unit for i, word in enumerate(term.lower().split()) for unit in ([" "] if i else []) + list(word)]
        if units:
            node = trie
            for unit in units:
                node = node.setdefault(unit, {})
            node[""] = {}  # a term ends here
    if not trie:
        return None
    return re.compile(r"(?<!\w)" + _alternatives(trie) + r"(?!\w)")


def _alternatives(node: dict) -> str:
    ends = "" in node
    branches = [_unit(unit) + _alternatives(child) for unit, child in sorted(node.items()) if unit]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Optional when a shorter term ends here; greedy, so the longer term wins when both match.
    return f"(?:{body})?" if ends else body


def _unit(unit: str) -> str:
    if unit == " ":
        return r"\s+"  # a phrase matches across any run of whitespace
    if unit == "'":
        return "['\u2019]"  # a straight apostrophe matches a curly one
    return re.escape(unit)


class Blocklist:
    """`find(text)`: the first blocked term in the text (as written there, lowercased), or None."""

    def __init__(self, terms: Iterable[str], allow: Iterable[str] = ()):
        self.pattern = compile_terms(terms)
        self.allowed = compile_terms(allow)

    def clear(self, text: str) -> str:
        """The text with allowed terms blanked out."""
        return self.allowed.sub(" ", text.lower()) if self.allowed else text

    def find(self, text: str) -> str | None:
        match = self.pattern.search(text.lower()) if self.pattern else None
        return " ".join(match.group(0).lower().split()) if match else None
