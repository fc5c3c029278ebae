"""Blind A/B export and import: randomised hidden order, blindness of the reviewer files, sign test."""

import csv
import json

import pytest
from scipy.stats import binomtest

from tuneloop.errors import TuneloopError
from tuneloop.eval.ab import export_ab, import_ab

N = 12  # distinct pairs; one more sample has identical outputs


def good(i):
    return f'{{"category": "billing", "note": "careful answer {i}"}}'


def weak(i):
    return f"Sorry, I cannot help with ticket {i} <b>&</b>"


@pytest.fixture
def samples(tmp_path):
    rows = []
    for i in range(N):
        rows.append({
            "prompt": [{"role": "system", "content": "Classify the ticket as JSON."},
                       {"role": "user", "content": f"Ticket {i}: I was charged twice,\nplease help"}],
            "reference": '{"category": "billing"}',
            "outputs": {"finetuned": good(i), "base": weak(i), "prompted": f"maybe {i}"},
            "scores": {"finetuned": {"exact_match": 1.0}, "base": {"exact_match": 0.0}},
        })
    rows.append({"prompt": [{"role": "user", "content": "Ticket same"}], "reference": "x",
                 "outputs": {"finetuned": "same text", "base": "same text"}, "scores": {}})
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_order_is_random_and_deterministic(samples, tmp_path):
    info = export_ab(samples, tmp_path / "a", seed=3)
    assert (info["pairs"], info["identical"]) == (N, 1)
    key = json.loads((tmp_path / "a" / "ab_key.json").read_text())
    assert (key["system_a"], key["system_b"], key["seed"]) == ("finetuned", "base", 3)
    firsts = [p["response_1"] for p in key["pairs"].values() if not p.get("identical")]
    assert set(firsts) == {"finetuned", "base"}  # both orders occur
    assert sum(p.get("identical", False) for p in key["pairs"].values()) == 1

    export_ab(samples, tmp_path / "b", seed=3)
    assert (tmp_path / "b" / "ab_key.json").read_text() == (tmp_path / "a" / "ab_key.json").read_text()
    assert (tmp_path / "b" / "ab.csv").read_text() == (tmp_path / "a" / "ab.csv").read_text()
    export_ab(samples, tmp_path / "c", seed=4)
    assert json.loads((tmp_path / "c" / "ab_key.json").read_text())["pairs"] != key["pairs"]

    # The CSV shows each response under the label the key says.
    for row in read_csv(tmp_path / "a" / "ab.csv"):
        i = int(row["id"][1:]) - 1
        texts = {"finetuned": good(i), "base": weak(i)}
        assert row["response_1"] == texts[key["pairs"][row["id"]]["response_1"]]
        assert row["response_2"] == texts[key["pairs"][row["id"]]["response_2"]]


def test_reviewer_files_are_blind(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    rows = read_csv(info["csv"])
    assert list(rows[0]) == ["id", "prompt", "response_1", "response_2", "judgment", "comment"]
    assert len(rows) == N and all(r["judgment"] == "" for r in rows)
    assert rows[0]["prompt"].startswith("system: Classify the ticket as JSON.\nuser: Ticket")
    page = info["html"].read_text(encoding="utf-8")
    for name in ("finetuned", "base"):
        assert name not in info["csv"].read_text(encoding="utf-8").lower()
        assert name not in page.lower()
    assert "<b>&</b>" not in page and "&lt;b&gt;&amp;&lt;/b&gt;" in page  # escaped
    assert "http" not in page and 'type="radio"' in page and "Blob" in page  # offline, with download
    assert "same text" not in page  # identical pair is not shown


def fill(csv_path, judge):
    rows = read_csv(csv_path)
    for row in rows:
        row["judgment"] = judge(row)
    write_csv(csv_path, rows)
    return rows


def test_round_trip_sign_test(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    key = json.loads(info["key"].read_text())["pairs"]
    tie_id = "q0005"

    def judge(row):
        if row["id"] == tie_id:
            return "Tie"
        return "1" if key[row["id"]]["response_1"] == "finetuned" else "2"

    fill(info["csv"], judge)
    result = import_ab(info["csv"], info["key"])
    # 11 finetuned wins, 1 judged tie + 1 identical tie, 0 losses.
    assert result["wins_a"] == N - 1 and result["wins_b"] == 0
    assert result["ties"] == 2 and result["unjudged"] == 0 and result["n"] == N + 1
    assert result["win_rate_a"] == 1.0
    assert result["p_value"] == pytest.approx(binomtest(N - 1, N - 1, 0.5).pvalue)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 11) and result["significant"]


def test_ten_of_ten_is_significant_and_losses_count(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    key = json.loads(info["key"].read_text())["pairs"]

    def judge(row):  # first 10 pairs: finetuned wins; last 2: base wins
        i = int(row["id"][1:])
        better = "finetuned" if i <= 10 else "base"
        return "1" if key[row["id"]]["response_1"] == better else "2"

    fill(info["csv"], judge)
    result = import_ab(info["csv"], info["key"])
    assert (result["wins_a"], result["wins_b"], result["ties"]) == (10, 2, 1)
    assert result["win_rate_a"] == pytest.approx(10 / 12)
    assert result["p_value"] == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    assert result["significant"] == (binomtest(10, 12, 0.5).pvalue < 0.05)
    assert binomtest(10, 10, 0.5).pvalue < 0.05


def test_blank_is_unjudged_and_synonyms_are_ties(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    fill(info["csv"], lambda row: {"q0001": "", "q0002": "  ", "q0003": "=", "q0004": "SAME"}.get(row["id"], "tie"))
    result = import_ab(info["csv"], info["key"])
    assert result["unjudged"] == 2 and result["ties"] == N - 2 + 1
    assert result["wins_a"] == result["wins_b"] == 0
    assert result["p_value"] is None and result["win_rate_a"] is None and not result["significant"]


def test_bad_judgment_names_line(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    fill(info["csv"], lambda row: "maybe" if row["id"] == "q0003" else "1")
    # Each prompt spans 3 lines (system turn, two-line user turn): the 3rd record starts on line 1 + 2*3 + 1.
    lines = info["csv"].read_text(encoding="utf-8").splitlines()
    assert lines[7].startswith("q0003,")
    with pytest.raises(TuneloopError, match=r"ab\.csv:8: judgment 'maybe'.*1, 2, tie"):
        import_ab(info["csv"], info["key"])


def test_unknown_id_raises(samples, tmp_path):
    info = export_ab(samples, tmp_path)
    rows = fill(info["csv"], lambda row: "1")
    rows[0]["id"] = "q9999"
    write_csv(info["csv"], rows)
    with pytest.raises(TuneloopError, match=r"ab\.csv:2: unknown id 'q9999'"):
        import_ab(info["csv"], info["key"])


def test_missing_system_and_missing_file(samples, tmp_path):
    with pytest.raises(TuneloopError, match=r"'rag'.*base, finetuned, prompted"):
        export_ab(samples, tmp_path / "x", system_a="rag")
    with pytest.raises(TuneloopError, match="file not found"):
        export_ab(tmp_path / "nope.jsonl", tmp_path / "x")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TuneloopError, match="no samples"):
        export_ab(tmp_path / "empty.jsonl", tmp_path / "x")


def test_limit(samples, tmp_path):
    info = export_ab(samples, tmp_path, limit=5)
    assert info["pairs"] == 5 and len(read_csv(info["csv"])) == 5
