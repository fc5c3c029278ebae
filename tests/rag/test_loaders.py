"""Loaders: every supported format becomes documents with stable ids; bad input fails with a clear message."""

from __future__ import annotations

import json

import pytest

from tests.rag.conftest import make_pdf
from tuneloop.errors import TuneloopError
from tuneloop.rag import load_documents


def test_markdown_and_text(tmp_path):
    (tmp_path / "guide.md").write_text("# Install guide\n\nRun the installer.\n")
    (tmp_path / "notes.txt").write_text("# not a title in plain text\nplain words\n")
    md, txt = load_documents([tmp_path / "guide.md", tmp_path / "notes.txt"])
    assert (md.id, md.source, md.title) == ("guide.md", str(tmp_path / "guide.md"), "Install guide")
    assert "Run the installer." in md.text
    assert txt.id == "notes.txt" and txt.title is None and "plain words" in txt.text


def test_html_strips_tags_scripts_and_styles_and_keeps_the_title(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title> Router &amp; modem </title><style>p { color: red }</style></head>"
        "<body><h2>Setup</h2><p>Plug in the <b>power</b> cable.</p><script>var secret = 1;</script>"
        "<p>Then wait.</p></body></html>")
    [doc] = load_documents([tmp_path / "page.html"])
    assert doc.title == "Router & modem"
    assert doc.text == "## Setup\n\nPlug in the power cable.\n\nThen wait."  # headings become Markdown headings
    assert "secret" not in doc.text and "color" not in doc.text and "<" not in doc.text


def test_pdf_pages_are_joined(tmp_path):
    path = make_pdf(tmp_path / "manual.pdf", ["The pump is under the filter.", "Clean it monthly."], title="Pump manual")
    [doc] = load_documents([path])
    assert doc.id == "manual.pdf" and doc.title == "Pump manual"
    assert doc.text == "The pump is under the filter.\n\nClean it monthly."


def test_jsonl_one_document_per_line(tmp_path):
    rows = [{"id": "pw", "title": "Passwords", "text": "Use the reset link."}, {"content": "Ships in two days."}]
    (tmp_path / "faq.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pw, ship = load_documents([tmp_path / "faq.jsonl"])
    assert (pw.id, pw.title, pw.text) == ("faq.jsonl#pw", "Passwords", "Use the reset link.")
    assert (ship.id, ship.title, ship.text) == ("faq.jsonl#2", None, "Ships in two days.")  # line number without an id


@pytest.mark.parametrize("lines, where, what", [
    (['{"text": "ok"}', '{"text": '], "faq.jsonl:2", "not valid JSON"),
    (['{"text": "ok"}', "", '{"title": "no text"}'], "faq.jsonl:3", "'text'"),
    (['["a list"]'], "faq.jsonl:1", "JSON object"),
    (['{"id": 1, "text": "a"}', '{"id": 1, "text": "b"}'], "faq.jsonl:2", "duplicate id"),
])
def test_jsonl_errors_name_the_line(tmp_path, lines, where, what):
    (tmp_path / "faq.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TuneloopError, match=what) as err:
        load_documents([tmp_path / "faq.jsonl"])
    assert where in str(err.value)


def test_directories_are_walked_recursively_in_sorted_order_with_relative_ids(tmp_path):
    root = tmp_path / "kb"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "b.md").write_text("bee")
    (root / "a.txt").write_text("ay")
    (root / "sub" / "deep" / "c.htm").write_text("<p>sea</p>")
    (root / "sub" / "image.png").write_bytes(b"\x89PNG")  # unsupported files inside a directory are skipped
    (root / "sub" / "empty.md").write_text("  \n")  # nothing to retrieve
    first = load_documents([root])
    assert [d.id for d in first] == ["a.txt", "b.md", "sub/deep/c.htm"]
    assert load_documents([root]) == first  # stable across runs
    assert [d.id for d in load_documents([root / "sub"], root=root)] == ["sub/deep/c.htm"]


def test_unsupported_missing_and_unreadable_files_fail_clearly(tmp_path):
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    with pytest.raises(TuneloopError, match=r"sheet.xlsx: unsupported document type '.xlsx' \(supported: .md.*\.pdf.*\.jsonl"):
        load_documents([tmp_path / "sheet.xlsx"])
    with pytest.raises(TuneloopError, match="no such file"):
        load_documents([tmp_path / "missing.md"])
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TuneloopError, match="latin.txt: not UTF-8"):
        load_documents([tmp_path / "latin.txt"])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    with pytest.raises(TuneloopError, match="broken.pdf: cannot read this PDF"):
        load_documents([tmp_path / "broken.pdf"])


def test_two_files_with_the_same_id_are_refused(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "readme.md").write_text(folder)
    with pytest.raises(TuneloopError, match="also produced by"):
        load_documents([tmp_path / "one", tmp_path / "two"])
    assert [d.id for d in load_documents([tmp_path / "one", tmp_path / "two"], root=tmp_path)] == ["one/readme.md", "two/readme.md"]
