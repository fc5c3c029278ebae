"""What every row form provides (the `Form` protocol): how to recognise a row of it, which keys it may
have, and how it becomes the canonical form."""

from __future__ import annotations

from typing import Protocol

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection


class Form(Protocol):
    name: str  # the value of data.form
    order: int  # auto-detection tries forms by ascending order; the first that recognises a row wins

    def detect(self, row: dict, fields: FieldNames) -> bool:
        """Whether `row` (a JSON object) looks like this form."""

    def keys(self, fields: FieldNames) -> set[str]:
        """Every key a row of this form may have (besides metadata and id)."""

    def convert(self, row: dict, fields: FieldNames) -> tuple[dict | None, Rejection | None]:
        """(canonical row, None) or (None, why it is rejected)."""
