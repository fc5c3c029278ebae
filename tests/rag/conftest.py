"""Fixtures for the RAG tests: a counting wrapper around the real MiniLM embedder, and a hand-made PDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


class CountingEmbed:
    """The embedded MiniLM, recording every batch of texts it is asked to embed."""

    __name__ = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        from tuneloop.models.embed import embed

        self.calls.append(list(texts))
        return embed(texts)


@pytest.fixture
def counting_embed() -> CountingEmbed:
    return CountingEmbed()


def make_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A minimal valid PDF, written by hand: one Helvetica text line per page, optional /Title."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode(), len(pages)),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        stream = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    if title:
        objects.append(b"<< /Title (%s) >>" % title.encode("latin-1"))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info = b" /Info %d 0 R" % len(objects) if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    """Embed one query at a time on one thread: on a busy 2-core machine a second, spinning thread made
    each single-query encode ~10x slower (0.28 s against 0.03 s measured), and batches here are tiny."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
