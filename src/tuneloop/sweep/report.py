"""What a sweep leaves: the table of trials (printed, trials.csv, sweep.json) and Optuna's parameter-importance and
parallel-coordinate plots as PNG, each with an HTML page that shows it beside its numbers."""

from __future__ import annotations

import csv
import html
import math

from tuneloop.artifacts import write_json
from tuneloop.layout import SweepDir


def trial_rows(study, folders: SweepDir) -> list[dict]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        steps = sorted(trial.intermediate_values)
        rows.append({
            "trial": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "objective": trial.value if trial.value is not None and math.isfinite(trial.value) else None,
            "last_step": steps[-1] if steps else None,
            "wall_s": round(trial.duration.total_seconds(), 1) if trial.duration else None,
            "retry_of": trial.user_attrs.get("retry_of"), "default": bool(trial.user_attrs.get("default")),
            "folder": str(folders.trial(trial.user_attrs.get("folder_of", trial.number)).root),
        })
    return rows


def write_summary(study, folders: SweepDir, meta: dict) -> dict:
    rows = trial_rows(study, folders)
    finished = [r for r in rows if r["state"] == "complete" and r["objective"] is not None]
    best = (min if meta["direction"] == "minimize" else max)(finished, key=lambda r: r["objective"]) if finished else None
    summary = {**meta, "trials": rows, "best": best, "counts": {s: sum(r["state"] == s for r in rows) for s in {r["state"] for r in rows}}}
    write_json(folders.summary, summary)
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    with folders.table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", *keys, meta["objective"], "last_step", "wall_s", "retry_of"])
        for r in rows:
            writer.writerow([r["trial"], r["state"], *(r["params"].get(k) for k in keys), r["objective"], r["last_step"], r["wall_s"], r["retry_of"]])
    return summary


def table(summary: dict):
    from rich.table import Table

    keys = list(dict.fromkeys(k for r in summary["trials"] for k in r["params"]))
    best = (summary.get("best") or {}).get("trial")
    out = Table(title=f"sweep {summary['study']}: {summary['objective']} ({summary['direction']})")
    for column in ("trial", "state", *(k.removeprefix("train.") for k in keys), summary["objective"], "steps", "wall s"):
        out.add_column(column, justify="right" if column not in ("state",) else "left")
    for r in summary["trials"]:
        value = "" if r["objective"] is None else f"{r['objective']:.4f}"
        note = f" (retry of {r['retry_of']})" if r["retry_of"] is not None else " (the config's own)" if r["default"] else ""
        out.add_row(f"{r['trial']}{' *' if r['trial'] == best else ''}", r["state"] + note,
                    *(cell(r["params"].get(k)) for k in keys), value, str(r["last_step"] or ""), str(r["wall_s"] or ""))
    return out


def write_plots(study, folders: SweepDir) -> dict[str, str]:
    """Importance (PED-ANOVA: no extra dependency) and parallel coordinates, once two trials have finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2 or not done[0].params:
        return {}
    written = {}
    importances = {}
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError):  # e.g. every trial has the same parameters
        pass
    for kind, png, page, draw in (
        ("importance", folders.importance_png, folders.importance_html,
         lambda: optuna.visualization.matplotlib.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())),
        ("parallel", folders.parallel_png, folders.parallel_html, lambda: optuna.visualization.matplotlib.plot_parallel_coordinate(study)),
    ):
        if kind == "importance" and not importances:
            continue
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw()
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(png, dpi=110)
        plt.close(figure)
        rows = ([[k, f"{v:.3f}"] for k, v in importances.items()] if kind == "importance" else
                [[str(t.number), *(cell(t.params.get(k)) for k in done[0].params), f"{t.value:.4f}"] for t in done])
        head = ["parameter", "importance"] if kind == "importance" else ["trial", *done[0].params, "objective"]
        page.write_text(_page(f"sweep {study.study_name}: {kind}", png.name, head, rows))
        written[kind] = str(png)
    return written


def _page(title: str, image: str, head: list[str], rows: list[list[str]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
            f"<img src='{html.escape(image)}' alt='{html.escape(title)}' style='max-width:100%'>"
            f"<table border=1 cellpadding=4><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>")


def cell(value) -> str:
    """A parameter value as the table and the trial headings show it."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
