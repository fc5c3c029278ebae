"""The evaluation report: plots and page from a hand-built results dict, full and minimal."""

from tuneloop.eval.report import write_report

SYSTEMS = ["base", "prompted", "rag", "finetuned"]
LABELS = ["account", "billing", "shipping"]


def _results() -> dict:
    systems = {
        s: {"json_valid": v, "category_accuracy": v * 0.8, "exact_match": v * 0.5, "bleu": 40 * v, "length_chars": 60 + 10 * k}
        for k, (s, v) in enumerate(zip(SYSTEMS, [0.1, 0.5, 0.6, 0.97]))
    }
    intervals = {s: {m: [v * 0.9, min(v * 1.1, v + 1)] for m, v in metrics.items()} for s, metrics in systems.items()}
    intervals["finetuned"]["category_accuracy"] = [0.712, 0.846]
    differences = {
        b: {m: {"diff": systems["finetuned"][m] - systems[b][m], "low": -0.01 if b == "rag" else 0.1, "high": 0.5}
            for m in ("json_valid", "category_accuracy")}
        for b in ("base", "prompted", "rag")
    }
    confusion = {s: [[3, 1, 0], [0, 4, 1], [1, 0, 5]] for s in ("base", "finetuned")}
    return {
        "n_test": 6, "systems": systems, "intervals": intervals, "differences": differences,
        "gated_system": "finetuned",
        "gates": [
            {"metric": "json_valid", "gate": ">= 0.95", "value": 0.97, "passed": True, "margin": 0.02},
            {"metric": "category_accuracy", "gate": ">= 0.9", "value": 0.776, "passed": False, "margin": -0.124},
            {"metric": "exact_match: finetuned - base", "gate": ">= 0.1", "value": 0.435, "passed": True, "margin": 0.335},
        ],
        "objective_passed": False,
        "labels": {"category": {"labels": LABELS, "confusion": confusion}},
    }


def _samples(systems=SYSTEMS) -> list[dict]:
    return [
        {
            "prompt": [{"role": "system", "content": "Classify."}, {"role": "user", "content": f"my parcel {i} is late"}],
            "reference": f'{{"category": "shipping", "ref": {i}}}',
            "outputs": {s: ("<script>alert(1)</script>" if (i, s) == (0, systems[0]) else '{"category": "shipping"}' * (k + 1))
                        for k, s in enumerate(systems)},
            "scores": {s: {"json_valid": 1.0} for s in systems},
        }
        for i in range(7)
    ]


def test_full_report(tmp_path):
    written = write_report(_results(), _samples(), tmp_path)
    names = {p.name for p in written}
    assert names == {"metrics.png", "confusion_category.png", "lengths.png", "report.html"}
    for path in written:
        assert path.exists() and path.parent == tmp_path
        if path.suffix == ".png":
            assert path.stat().st_size > 2048, path
    page = (tmp_path / "report.html").read_text()
    for system in SYSTEMS:
        assert system in page
    assert "FAILED" in page
    assert "category_accuracy" in page and "missed by 0.124" in page
    assert "exact_match: finetuned - base" in page  # a difference gate is shown as it is
    assert "0.776 [0.712, 0.846]" in page
    assert "+0.870 [0.100, 0.500] *" in page  # base: interval excludes 0, marked
    assert "[-0.010, 0.500] *" not in page  # rag: interval contains 0, not marked
    assert '{&quot;category&quot;: &quot;shipping&quot;, &quot;ref&quot;: 0}' in page  # sample 1's reference
    assert "my parcel 4 is late" in page and "my parcel 5 is late" not in page  # first 5 samples only
    assert "Classify." not in page  # the prompt shown is the last user message
    assert "<script>" not in page and "&lt;script&gt;" in page
    for name in ("metrics.png", "confusion_category.png", "lengths.png"):
        assert f'src="{name}"' in page


def test_minimal_results(tmp_path):
    results = {"n_test": 7, "systems": {"finetuned": {"json_valid": 1.0, "bleu": 12.5}}, "gated_system": "finetuned",
               "gates": [{"metric": "json_valid", "gate": ">= 0.95", "value": 1.0, "passed": True, "margin": 0.05}],
               "objective_passed": True}
    written = write_report(results, _samples(["finetuned"]), tmp_path)
    assert {p.name for p in written} == {"metrics.png", "lengths.png", "report.html"}
    assert all(p.exists() for p in written)
    page = (tmp_path / "report.html").read_text()
    assert "PASSED" in page and "finetuned" in page and "1.000" in page
    assert "Paired differences" not in page


def test_empty_parts(tmp_path):
    results = {"systems": {"base": {"json_valid": 0.0}}, "intervals": {}, "differences": {}, "labels": {}, "gates": []}
    written = write_report(results, [], tmp_path)
    assert {p.name for p in written} == {"metrics.png", "report.html"}
    assert "base" in (tmp_path / "report.html").read_text()
