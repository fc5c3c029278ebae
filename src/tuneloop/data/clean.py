"""Text cleaning: Unicode NFC, control characters, whitespace and stray HTML, each switchable.

Cleaning keeps meaning and layout a reader relies on (newlines, tabs inside lines, indentation of code
is not touched beyond trailing spaces); it removes what only adds noise or hides text: invisible
control and format characters, runs of blank lines, tags left over from HTML exports.
"""

from __future__ import annotations

import html
import re
import unicodedata

from tuneloop.config import CleanConfig

# C0/C1 controls except \t \n, plus zero-width and bidirectional format characters.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_BREAK = re.compile(r"<br\s*/?>|</p>|</div>|</li>", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{1,6}|#x[0-9A-Fa-f]{1,6});")
_SPACES = re.compile(r"[ \u00a0]{2,}")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


class Cleaner:
    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg

    def __call__(self, text: str) -> str:
        cfg = self.cfg
        if cfg.unicode_nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if cfg.strip_control:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            text = _CONTROL.sub("", text)
        if cfg.strip_html and ("<" in text or "&" in text):
            text = strip_html(text)
        if cfg.whitespace:
            # Each substitution only where it can match: most texts need none of them.
            if "  " in text or "\u00a0" in text:
                text = _SPACES.sub(" ", text)
            if "\n" in text:
                text = _TRAILING.sub("\n", text)
                if "\n\n\n" in text:
                    text = _BLANK_LINES.sub("\n\n", text)
            text = text.strip()
        return text


def strip_html(text: str) -> str:
    """Remove tags and decode entities, but only in text that looks like HTML: `a < b` stays."""
    if not (_TAG.search(text) or _ENTITY.search(text)):
        return text
    text = _BREAK.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)
