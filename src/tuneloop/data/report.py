"""The data report as HTML with PNG plots: what came in, what was dropped and why, what the model will see."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.layout import DataDir  # noqa: E402
from tuneloop.models.chat import IGNORE, encode_chat, end_of_turn_id  # noqa: E402


def write_report(report: dict, out: Path, assignment: dict[str, list[int]], lengths: list, tokenizer) -> list[Path]:
    """Write report.html (+ PNGs); also adds the rendered examples to `report` (rendered with the model's
    tokenizer when there is one). Returns the files written."""
    folder, written = DataDir(out), []
    if lengths and lengths[0] is not None:
        written.append(_plot_lengths(assignment, lengths, report["tokens"].get("max_tokens"), folder.lengths_plot))
    if any(report["labels"][s] for s in report["labels"]):
        written.append(_plot_labels(report["labels"], folder.labels_plot))
    report["examples"] = {name: _example(folder.split(name), tokenizer) for name in assignment}
    tool_row = _first_tool_call(folder.split("train")) if "train" in assignment else None
    if tool_row is not None:  # how a tool call is written for the model, and what of it is trained
        report["examples"]["train, a tool call"] = _rendered(tool_row, tokenizer)
    folder.report_html.write_text(_html(report, [p.name for p in written]))
    return [*written, folder.report_html]


def _example(path: Path, tokenizer) -> dict | None:
    """The first row of a split exactly as the model sees it, with the trained part marked."""
    with open(path) as handle:
        line = handle.readline()
    if not line:
        return None
    return _rendered(json.loads(line), tokenizer)


def _first_tool_call(path: Path) -> dict | None:
    with open(path) as handle:
        # Only lines naming the key are parsed: most splits have no tool calls, and parsing every row of a
        # large train split cost ~0.5 s per 100k rows.
        rows = (json.loads(line) for line in handle if '"tool_calls"' in line)
        return next((row for row in rows if any(m.get("tool_calls") for m in row.get("messages", []))), None)


def _rendered(row: dict, tokenizer) -> dict:
    if tokenizer is None or "messages" not in row:
        return {"row": row}
    encoded = encode_chat(tokenizer, row["messages"], max_len=1 << 20, tools=row.get("tools"))
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    return {
        "rendered": tokenizer.decode(encoded.input_ids),
        "trained": tokenizer.decode(trained),
        "end_of_turn_trained": end_of_turn_id(tokenizer) in trained,
    }


def _plot_lengths(assignment, lengths, max_tokens, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, indices in assignment.items():
        if indices:
            # Density, not counts: the small val and test splits stay readable next to train.
            ax.hist([lengths[i] for i in indices], bins=30, alpha=0.5, density=True, histtype="stepfilled", label=f"{name} ({len(indices)})")
    if max_tokens:
        ax.axvline(max_tokens, color="black", linestyle="--", linewidth=1, label=f"max_tokens={max_tokens}")
    ax.set_xlabel("tokens per example (chat template included)")
    ax.set_ylabel("share of split (density)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_labels(labels: dict[str, dict], path: Path) -> Path:
    names = sorted({label for split in labels.values() for label in split}, key=str)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    width = 0.8 / len(labels)
    for k, (split, counts) in enumerate(labels.items()):
        total = sum(counts.values()) or 1
        ax.bar([i + k * width for i in range(len(names))], [counts.get(n, 0) / total for n in names], width, label=split)
    ax.set_xticks([i + width for i in range(len(names))], [str(n) for n in names], rotation=20)
    ax.set_ylabel("share of split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _harmful(found: dict) -> list[str]:
    """The harmful-content screen's counts, and where the flagged rows it kept are (mode warn)."""
    kept = "kept and counted" if found["mode"] == "warn" else "rejected (rule harmful_content)"
    parts = [f"<h2>Harmful content ({found['flagged']} rows flagged, {kept})</h2>",
             _table([(k, v) for k, v in found["by_detector"].items()], ("detector", "rows flagged")),
             f"<p>screen: {html.escape(found['screen'])}; classifier threshold {found['threshold']}</p>"]
    if found["kept_examples"]:
        parts.append(_table([(e["where"], e["reason"]) for e in found["kept_examples"]], ("kept row", "flagged because")))
    return parts


def _html(report: dict, images: list[str]) -> str:
    sections = [
        "<h1>tuneloop data report</h1>",
        f"<p>{report['rows_in']} rows in, {report['kept']} kept, {report['rejected']} rejected "
        f"(every rejected row, with file, line and reason, is in <code>rejected.jsonl</code>).</p>",
        "<h2>Splits</h2>", _table([(k, v) for k, v in report["splits"].items()], ("split", "rows")),
        "<h2>Rejected, by rule</h2>", _table(list(report["rejected_by_rule"].items()), ("rule", "rows")),
        "<h2>Detected forms</h2>", _table([(s, f, n) for s, forms in report["forms"].items() for f, n in forms.items()], ("file", "form", "rows")),
        "<h2>PII redacted (counts only)</h2>", _table(list(report["pii_redacted"].items()), ("type", "count")),
        "<h2>Labels per split</h2>", _table([(s, l, n) for s, c in report["labels"].items() for l, n in c.items()], ("split", "label", "rows")),
        "<h2>Leakage between splits</h2>", _table([(k, v) for k, v in report["leakage"].items()], ("pair", "shared rows")),
        f"<h2>Duplicate clusters ({report['duplicate_clusters']})</h2>",
        _table([(c["kept"], ", ".join(c["dropped"])) for c in report["largest_duplicate_clusters"]], ("kept row", "dropped as its duplicates")),
    ]
    if report.get("harmful_content"):
        sections += _harmful(report["harmful_content"])
    if report.get("synthetic"):
        made = report["synthetic"]
        sections += [f"<h2>Synthetic rows ({made['rows_in']} in = {made['kept']} kept in train + {made['rejected']} rejected)</h2>",
                     _table(list(made["rejected_by_rule"].items()), ("rule", "rows")),
                     _table(list(made["labels"].items()), ("label of kept rows", "rows"))]
    if report.get("mix"):
        mix = report["mix"]
        sections += [f"<h2>Train mix ({mix['rows']} rows drawn, {'with' if mix['replace'] else 'without'} replacement, "
                     f"{mix['repeated']} repeats, {mix['unused']} kept rows unused)</h2>",
                     _table([(g, mix["available"][g], mix["ratios"][g], mix["drawn"][g], mix["drawn_ratio"][g]) for g in mix["drawn"]],
                            ("source", "train rows", "share asked", "drawn", "share drawn"))]
        sections += [f"<p>{html.escape(note)}</p>" for note in mix["notes"]]
    if report.get("tokens"):
        tokens = report["tokens"]
        sections += ["<h2>Token lengths</h2>", _table([(s, *v.values()) for s, v in tokens.items() if isinstance(v, dict)], ("split", "min", "median", "p95", "max")),
                     f"<p>max_tokens: {tokens['max_tokens']}; truncated: {tokens['truncated']}</p>"]
    sections += [f'<img src="{name}" alt="{name}">' for name in images]
    sections.append("<h2>What the model sees (first row of each split)</h2>")
    for split, example in report["examples"].items():
        if example and "rendered" in example:
            sections.append(
                f"<h3>{split}</h3><pre>{html.escape(example['rendered'])}</pre><p>trained tokens:</p>"
                f"<pre class='trained'>{html.escape(example['trained'])}</pre>"
                f"<p>end-of-turn token trained: <b>{'yes' if example['end_of_turn_trained'] else 'NO'}</b></p>"
            )
        elif example:
            sections.append(f"<h3>{split}</h3><pre>{html.escape(json.dumps(example['row'], indent=2, ensure_ascii=False))}</pre>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"
             "pre{background:#f6f6f6;padding:.6rem;white-space:pre-wrap}pre.trained{background:#e8f6e8}img{max-width:100%}")
    return f"<!doctype html><meta charset='utf-8'><title>tuneloop data report</title><style>{style}</style>" + "\n".join(sections)
