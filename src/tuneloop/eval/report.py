"""The evaluation report as HTML with PNG plots: did the objective pass, by how much each system differs
(with intervals, so noise is not read as progress), where the labels go wrong, and what the outputs look like.

Reads results.json's dict and samples.jsonl's rows; every part it needs may be missing (one system, no
intervals, no labels), and then that part of the page is simply left out.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.layout import EvalDir  # noqa: E402

# Metrics that are not shares in [0, 1]; drawn in their own panels so they do not flatten the others.
_WIDE = {"bleu", "chrf", "length_chars"}
_THRESHOLD = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")
_SAMPLES = 5


def write_report(results: dict, samples: list[dict], out: Path) -> list[Path]:
    """Write metrics.png, confusion_<field>.png, lengths.png and report.html into `out`.
    Returns the files written (a plot with nothing to show is skipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    systems = list(results.get("systems") or {})
    # One colour per system in every plot, in the order results.json lists them.
    colours = {system: f"C{k}" for k, system in enumerate(systems)}
    folder, written = EvalDir(out), []
    if systems:
        written.append(_plot_metrics(results, systems, colours, folder.metrics_plot))
    for field, entry in (results.get("labels") or {}).items():
        if entry and entry.get("confusion"):
            written.append(_plot_confusion(field, entry, folder.confusion_plot(str(field))))
    if any(sample.get("outputs") for sample in samples):
        written.append(_plot_lengths(samples, systems, colours, folder.lengths_plot))
    page = folder.report_html
    page.write_text(_html(results, samples, systems, [p.name for p in written]), encoding="utf-8")
    return [*written, page]


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}"


def _threshold(gate: dict) -> float | None:
    """The gate's number: parsed from '>= 0.95', else recovered from value - margin."""
    match = _THRESHOLD.search(str(gate.get("gate", "")))
    if match:
        return float(match[0])
    if gate.get("value") is not None and gate.get("margin") is not None:
        return gate["value"] - gate["margin"]
    return None


def _metric_names(results: dict, systems: list[str]) -> list[str]:
    names = []
    for system in systems:
        names += [m for m in results["systems"][system] if m not in names]
    return names


def _plot_metrics(results: dict, systems: list[str], colours: dict, path: Path) -> Path:
    table, intervals = results["systems"], results.get("intervals") or {}
    # Per-class scores, macro precision/recall and per-attribute flip rates stay in the tables: in the chart
    # they would bury the rest.
    metrics = [m for m in _metric_names(results, systems) if ".f1." not in m and not m.endswith(("precision_macro", "recall_macro"))
               and not (m.startswith("bias.") and m != "bias.flip_rate")]
    wide = {m for m in metrics if m in _WIDE or any(v is not None and abs(v) > 1 for v in (table[s].get(m) for s in systems))}
    unit = [m for m in metrics if m not in wide]
    other = [m for m in metrics if m in wide]
    # Panels of at most five [0, 1] metrics, then one per wide metric (each its own y scale), two panels to a
    # row: a chart that stays readable at its size however many metrics there are.
    panels = [unit[i:i + 5] for i in range(0, len(unit), 5)] + [[m] for m in other]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.6 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    gates = {g["metric"]: _threshold(g) for g in results.get("gates") or []}
    width = 0.8 / len(systems)
    for ax, group in zip(axes.flat, panels):
        for k, system in enumerate(systems):
            xs = [i + k * width for i in range(len(group))]
            # A metric a system lacks (the bias probe's, on an unprobed system) gets no bar, not a zero one.
            heights = [math.nan if table[system].get(m) is None else table[system][m] for m in group]
            # Error bars are distances from the bar top; clip at 0 in case an interval does not contain its point.
            lows = [max(0.0, h - intervals.get(system, {}).get(m, (h, h))[0]) for h, m in zip(heights, group)]
            highs = [max(0.0, intervals.get(system, {}).get(m, (h, h))[1] - h) for h, m in zip(heights, group)]
            ax.bar(xs, heights, width, color=colours[system], label=system,
                   yerr=[lows, highs] if intervals else None, capsize=3, error_kw={"linewidth": 1})
        for i, metric in enumerate(group):
            if gates.get(metric) is not None:
                x0 = i - width / 2
                ax.hlines(gates[metric], x0, x0 + 0.8, colors="black", linestyles="dashed", linewidth=1)
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(group))], group, rotation=20)
        if all(m in unit for m in group):
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("score (dashed: objective gate; bars: 95% CI)")
        else:
            ax.set_ylim(bottom=0)
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_confusion(field: str, entry: dict, path: Path) -> Path:
    labels, confusion = [str(x) for x in entry.get("labels") or []], entry["confusion"]
    size = max(len(m) for m in confusion.values()) or 1
    side = max(3.0, 0.45 * size + 1.5)
    fig, axes = plt.subplots(1, len(confusion), figsize=(side * len(confusion), side), dpi=110, squeeze=False)
    for ax, (system, matrix) in zip(axes[0], confusion.items()):
        rows, cols = len(matrix), max((len(r) for r in matrix), default=0)
        # A matrix may carry an extra row/column past the labels (e.g. unparsable answers): name it.
        names = lambda n: [labels[i] if i < len(labels) else "other" for i in range(n)]  # noqa: E731
        ax.imshow(matrix if rows and cols else [[0]], cmap="Blues", vmin=0)
        top = max((v for r in matrix for v in r), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if top and count > top / 2 else "black")
        ax.set_xticks(range(cols), names(cols), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(rows), names(rows), fontsize=8)
        ax.set_xlabel(f"predicted {field}")
        ax.set_ylabel(f"reference {field}")
        ax.set_title(system)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_lengths(samples: list[dict], systems: list[str], colours: dict, path: Path) -> Path:
    names = systems + [s for sample in samples for s in sample.get("outputs", {}) if s not in systems]
    names = list(dict.fromkeys(names))
    lengths = {system: [len(s["outputs"][system]) for s in samples if system in s.get("outputs", {})] for system in names}
    # The reference lengths as an outline: what a right-sized answer looks like.
    references = [len(s["reference"]) for s in samples if isinstance(s.get("reference"), str)]
    # Shared bins, so the systems' bars line up and a system whose outputs all have one length stays visible.
    everything = [n for values in lengths.values() for n in values] + references
    low, high = min(everything), max(everything)
    bins = [low + (high - low + 1) * i / 30 for i in range(31)]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for k, system in enumerate(names):
        if lengths[system]:
            ax.hist(lengths[system], bins=bins, alpha=0.5, histtype="stepfilled", color=colours.get(system, f"C{k}"), label=system)
    if references:
        ax.hist(references, bins=bins, histtype="step", color="black", linestyle="--", label="reference")
    ax.set_xlabel("output length (characters)")
    ax.set_ylabel("samples")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(rows: list[list], header: list) -> str:
    """Cells are text, or (text, css class) to mark one; everything is escaped."""
    def cell(c, tag="td"):
        text, cls = c if isinstance(c, tuple) else (c, "")
        return f"<{tag}{f' class={cls!r}' if cls else ''}>{html.escape(str(text))}</{tag}>"
    head = "".join(cell(h, "th") for h in header)
    return f"<table><tr>{head}</tr>" + "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in rows) + "</table>"


def _verdict(results: dict) -> list[str]:
    gates = results.get("gates") or []
    passed = results.get("objective_passed", all(g.get("passed") for g in gates))
    system = html.escape(str(results.get("gated_system", "")))
    head = (f"<p class='verdict {'pass' if passed else 'fail'}'>Objective <b>{'PASSED' if passed else 'FAILED'}</b>"
            f" ({len(gates)} gate{'s' if len(gates) != 1 else ''} checked on <code>{system}</code>).</p>")
    failed = [
        f"<li><code>{html.escape(str(g['metric']))}</code> = {_num(g.get('value'))}, gate {html.escape(str(g.get('gate')))}:"
        f" missed by {_num(abs(g['margin'])) if g.get('margin') is not None else '–'}</li>"
        for g in gates if not g.get("passed")
    ]
    rows = [[g["metric"], g.get("gate"), _num(g.get("value")), _num(g.get("margin")),
             ("pass", "pass") if g.get("passed") else ("FAIL", "fail")] for g in gates]
    return [head, f"<ul>{''.join(failed)}</ul>" if failed else "",
            _table(rows, ["metric", "gate", "value", "margin", "result"]) if rows else ""]


def _bias(bias: dict) -> list[str]:
    """The counterfactual probe (eval/bias.py): flip rates per attribute and system, then flips to read."""
    if not bias.get("systems"):
        return []
    sections = ["<h2>Bias: counterfactual probe</h2>",
                f"<p>{bias.get('probed')} of {bias.get('inputs')} inputs ({bias.get('from_file', 0)} from eval.bias.inputs) hold a "
                f"term of {html.escape(str(bias.get('terms')))}; {bias.get('variants')} variants swap it for others of its group. "
                "A variant flips when a label of its answer (the answer text, without label fields) differs from the "
                "original input's answer.</p>"]

    def rate(row: dict) -> str:
        interval = row.get("interval")
        return _num(row.get("flip_rate")) + (f" [{_num(interval[0])}, {_num(interval[1])}]" if interval else "")

    for system, entry in bias["systems"].items():
        rows = [[name, a["inputs"], a["variants"], a["flips"], a["inputs_flipped"], rate(a), _num(a.get("answer_similarity"))]
                for name, a in entry["attributes"].items()]
        rows.append(["all", entry["inputs"], entry["variants"], entry["flips"], entry["inputs_flipped"], rate(entry), ""])
        sections += [f"<h3>{html.escape(system)}</h3>", _table(rows, ["attribute", "inputs", "variants", "flips", "inputs with a flip",
                                                                     "flip rate (95% CI)", "answer similarity"])]
        examples = [[name, e["swapped"], e["input"], e["variant"], e["answer"], e["variant_answer"]]
                    for name, rows_ in (entry.get("examples") or {}).items() for e in rows_]
        if examples:
            sections += ["<p>Flips:</p>", _table(examples, ["attribute", "swapped", "input", "variant", "answer", "variant's answer"])]
    return sections


def _costs(costs: dict) -> list[str]:
    """External systems: where they answered from, tokens, and the estimated price."""
    live = {name: c for name, c in costs.items() if not c.get("recorded")}
    recorded = [f"<p>{html.escape(name)}: answers recorded in {html.escape(str(c.get('source')))}.</p>"
                for name, c in costs.items() if c.get("recorded")]
    if not live:
        return ["<h2>External systems</h2>", *recorded] if recorded else []

    def usd(value):
        return "– (no price in eval.prices)" if value is None else f"${value:,.4f}"
    rows = [[name, c["model"], c["requests"], c["cached"], c["prompt_tokens"], c["completion_tokens"],
             usd(c["usd"]), usd(c["usd_per_1k_requests"])] for name, c in live.items()]
    return ["<h2>External systems: tokens and cost</h2>",
            _table(rows, ["system", "model", "requests", "from cache", "prompt tokens", "completion tokens", "est. cost", "per 1k requests"]),
            *recorded]


def _prompt(messages) -> str:
    # The last user turn is what the system answered; a system prompt is the same for every sample.
    if isinstance(messages, str):
        return messages
    users = [m.get("content", "") for m in messages or [] if m.get("role") == "user"]
    return users[-1] if users else (messages[-1].get("content", "") if messages else "")


def _html(results: dict, samples: list[dict], systems: list[str], images: list[str]) -> str:
    intervals, differences = results.get("intervals") or {}, results.get("differences") or {}
    metrics = _metric_names(results, systems)
    sections = ["<h1>tuneloop evaluation report</h1>",
                f"<p>{results.get('n_test', len(samples))} test samples; systems: {html.escape(', '.join(systems))}.</p>",
                "<h2>Verdict</h2>", *_verdict(results)]

    def with_interval(value, interval):
        return _num(value) + (f" [{_num(interval[0])}, {_num(interval[1])}]" if interval else "")

    sections += ["<h2>Metrics (95% bootstrap interval)</h2>", _table(
        [[m, *(with_interval(results["systems"][s].get(m), intervals.get(s, {}).get(m)) for s in systems)] for m in metrics],
        ["metric", *systems])]
    if differences:
        gated = results.get("gated_system", "finetuned")
        baselines = list(differences)
        names = list(dict.fromkeys(m for b in baselines for m in differences[b]))

        def diff_cell(d):
            if not d:
                return "–"
            text = f"{d['diff']:+.3f}" + (f" [{_num(d['low'])}, {_num(d['high'])}]" if "low" in d else "")
            # An interval that excludes 0 is a difference the test set can tell apart from noise.
            clear = "low" in d and (d["low"] > 0 or d["high"] < 0)
            return (text + " *", "sig") if clear else text
        sections += [f"<h2>Paired differences: {html.escape(str(gated))} minus each baseline</h2>",
                     _table([[m, *(diff_cell(differences[b].get(m)) for b in baselines)] for m in names],
                            ["metric", *(f"− {b}" for b in baselines)]),
                     "<p>* the 95% interval excludes 0.</p>"]
    regression = results.get("regression") or {}
    if regression.get("systems"):
        reg_systems = list(regression["systems"])
        sections += ["<h2>General capability (regression)</h2>", _table(
            [[m, *(_num(regression["systems"][s][m]) for s in reg_systems)] for m in ("perplexity", "general_mc_acc")],
            ["metric", *reg_systems]),
            "<p>perplexity on held-out general English text (lower is better); accuracy on a local 40-question "
            "general-knowledge multiple-choice task run by lm-evaluation-harness (chance is 0.25).</p>"]
        if "perplexity_change" in regression:
            sections.append(f"<p>perplexity change {regression['perplexity_change']:+.1%}; "
                            f"multiple-choice accuracy drop {regression['general_mc_drop']:+.3f}.</p>")
    edge = results.get("edge_cases") or {}
    if edge.get("systems"):
        edge_systems = list(edge["systems"])
        shown = [m for m in metrics if all(m in edge["systems"][s] for s in edge_systems)]
        sections += [f"<h2>Edge and adversarial cases ({edge.get('n')} from {html.escape(str(edge.get('file')))})</h2>",
                     _table([[m, *(_num(edge["systems"][s][m]) for s in edge_systems)] for m in shown], ["metric", *edge_systems])]
    sections += _bias(results.get("bias") or {})
    sections += _costs(results.get("costs") or {})
    if images:
        sections += ["<h2>Plots</h2>", *(f'<img src="{html.escape(n)}" alt="{html.escape(n)}">' for n in images)]
    if samples:
        sections.append(f"<h2>First {min(_SAMPLES, len(samples))} samples</h2>")
    for i, sample in enumerate(samples[:_SAMPLES], 1):
        sections += [f"<h3>Sample {i}</h3><p>prompt (last user message):</p><pre>{html.escape(_prompt(sample.get('prompt')))}</pre>",
                     f"<p>reference:</p><pre class='reference'>{html.escape(str(sample.get('reference', '')))}</pre>"]
        for system, output in (sample.get("outputs") or {}).items():
            scores = (sample.get("scores") or {}).get(system) or {}
            score_text = ", ".join(f"{k}={_num(v)}" for k, v in scores.items())
            sections.append(f"<p><b>{html.escape(system)}</b> <small>{html.escape(score_text)}</small></p>"
                            f"<pre>{html.escape(str(output))}</pre>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"
             "pre{background:#f6f6f6;padding:.6rem;white-space:pre-wrap}pre.reference{background:#e8f6e8}img{max-width:100%}"
             ".pass{color:#1a7f37}.fail{color:#c0392b;font-weight:bold}td.sig{background:#fff3c4}")
    return f"<!doctype html><meta charset='utf-8'><title>tuneloop evaluation report</title><style>{style}</style>" + "\n".join(sections)
