"""The evaluation result as a terminal table: every system side by side on the headline metrics."""

from __future__ import annotations

from rich.table import Table

# The headline metrics, in this order, when measured; then the bias probe's flip rates; gated metrics are always shown.
HEADLINE = ("json_valid", "schema_valid", "exact_match", "f1_macro", "_accuracy", "rougeL", "chrf", "semantic_similarity", "refusal")


def metrics_table(results: dict) -> Table:
    """Every system side by side on the headline metrics, with 95% intervals and the gates."""
    systems, intervals = results["systems"], results.get("intervals", {})
    gates = {g["metric"]: g for g in results["gates"]}
    gated_system = results.get("gated_system", "finetuned")
    # Every system's metrics: the bias probe's are measured on the probed systems only.
    measured = list(dict.fromkeys(m for values in systems.values() for m in values))
    shown = [m for pattern in HEADLINE for m in measured if (m == pattern or (pattern.startswith(("_", "f1")) and m.endswith(pattern)))]
    shown = list(dict.fromkeys([*shown, *(m for m in measured if m.startswith("bias.")), *(g for g in gates if g in measured)]))
    table = Table(title=f"test split, {results['n_test']} examples (95% bootstrap intervals)")
    table.add_column("metric")
    for system in systems:
        table.add_column(system, justify="right")
    table.add_column(f"gate ({gated_system})", justify="right")
    for metric in shown:
        gate = gates.get(metric)
        mark = "" if gate is None else f"{gate['gate']} {'[green]pass' if gate['passed'] else '[red]fail'}"
        table.add_row(metric, *(_cell(systems[s].get(metric), intervals.get(s, {}).get(metric)) for s in systems), mark)
    for key, gate in gates.items():
        if key not in measured:  # comparison gates such as "exact_match: finetuned - base"
            table.add_row(key, *([""] * (len(systems) - 1)), f"{gate['value']:+.3f}", f"{gate['gate']} {'[green]pass' if gate['passed'] else '[red]fail'}")
    return table


def _cell(value: float | None, interval: list | None) -> str:
    if value is None:
        return "–"
    digits = 1 if abs(value) >= 10 else 3
    if not interval or interval[0] != interval[0]:  # none, or nan
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
