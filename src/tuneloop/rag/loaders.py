"""Loaders: turn the team's files into plain-text documents for the knowledge base.

Supported: Markdown and text (.md, .markdown, .txt), HTML (.html, .htm: tags stripped with the stdlib
parser, script/style dropped, <title> kept, headings turned into Markdown headings so the chunker can
split on them), PDF (.pdf, pypdf, page texts joined) and JSONL (.jsonl, one document per line:
{"id"?, "text" or "content", "title"?}).

A document's id is its path relative to a root, in POSIX form, plus "#<row id or line number>" for
JSONL rows: stable across runs and machines, so re-adding a file replaces its old version. The root
is `root` when given, else the directory a file was found under, else (a file passed directly) its
own folder, so the id is the file name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tuneloop.artifacts import jsonl_objects
from tuneloop.errors import TuneloopError
from tuneloop.extras import require


@dataclass(frozen=True)
class Document:
    id: str
    source: str  # the file it came from, as given
    text: str
    title: str | None = None


def load_documents(paths: list[Path], root: Path | None = None) -> list[Document]:
    """Every document in `paths` (files, or directories walked recursively in sorted order)."""
    documents: list[Document] = []
    seen: dict[str, str] = {}
    for path, base in _files(paths, root):
        rel = _relative(path, base)
        for doc in _READERS[path.suffix.lower()](path, rel):
            if doc.id in seen:
                raise TuneloopError(f"{path}: document id '{doc.id}' is also produced by {seen[doc.id]}; "
                                    "pass a common `root` (or rename one) so every document has its own id")
            seen[doc.id] = str(path)
            documents.append(doc)
    return documents


def supported() -> str:
    return ", ".join(_READERS)


def _files(paths: list[Path], root: Path | None) -> Iterator[tuple[Path, Path]]:
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _READERS):
                yield file, Path(root) if root else path
        elif path.is_file():
            if path.suffix.lower() not in _READERS:
                raise TuneloopError(f"{path}: unsupported document type '{path.suffix}' (supported: {supported()})")
            yield path, Path(root) if root else path.parent
        else:
            raise TuneloopError(f"{path}: no such file or directory")


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        raise TuneloopError(f"{path}: not under the root {base}; pass files inside the root, or another root") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TuneloopError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); re-save it as UTF-8") from None
    except OSError as err:
        raise TuneloopError(f"{path}: cannot read it ({err.strerror})") from None


def _text(path: Path, rel: str) -> list[Document]:
    text = _read_text(path).strip()
    if not text:
        return []  # an empty file holds nothing to retrieve
    title = None
    if path.suffix.lower() != ".txt":
        first = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
        title = first.group(1) if first else None
    return [Document(rel, str(path), text, title)]


class _HTMLText(HTMLParser):
    """Collects visible text; block elements become paragraph breaks and h1-h6 Markdown headings."""

    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCKS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
               "blockquote", "pre", "hr", "dd", "dt", "main", "nav", "aside", "form", "figure"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def _html(path: Path, rel: str) -> list[Document]:
    parser = _HTMLText()
    parser.feed(_read_text(path))
    parser.close()
    paragraphs = (p.strip() for p in re.split(r"\n\s*\n", "".join(parser.parts)))
    text = "\n\n".join(p for p in paragraphs if p and not re.fullmatch(r"#+", p))
    title = " ".join("".join(parser.title_parts).split()) or None
    return [Document(rel, str(path), text, title)] if text else []


def _pdf(path: Path, rel: str) -> list[Document]:
    require("rag", f"{path}: reading PDF files")
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or None
    except (PyPdfError, OSError, ValueError) as err:
        raise TuneloopError(f"{path}: cannot read this PDF ({err}); is it a valid, unencrypted PDF?") from None
    text = "\n\n".join(p for p in pages if p)
    if not text:
        raise TuneloopError(f"{path}: the PDF has no extractable text (a scanned document?); OCR it first or leave it out")
    return [Document(rel, str(path), text, str(title) if title else None)]


def _jsonl(path: Path, rel: str) -> list[Document]:
    documents, ids = [], set()
    for number, row in jsonl_objects(path, 'a JSON object like {"text": ...}'):
        where = f"{path}:{number}"
        text = row.get("text", row.get("content"))
        if not isinstance(text, str) or not text.strip():
            raise TuneloopError(f"{where}: needs a non-empty string field 'text' (or 'content')")
        title = row.get("title")
        if title is not None and not isinstance(title, str):
            raise TuneloopError(f"{where}: 'title' must be a string")
        # An explicit row id keeps the document's identity when lines are reordered.
        key = str(row["id"]) if row.get("id") is not None else str(number)
        if key in ids:
            raise TuneloopError(f"{where}: duplicate id '{key}' in this file; ids must be unique")
        ids.add(key)
        documents.append(Document(f"{rel}#{key}", str(path), text.strip(), title or None))
    return documents


_READERS: dict[str, Callable[[Path, str], list[Document]]] = {
    ".md": _text, ".markdown": _text, ".txt": _text, ".html": _html, ".htm": _html, ".pdf": _pdf, ".jsonl": _jsonl,
}
