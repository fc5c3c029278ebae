"""Blind A/B judgments by humans: does a person prefer system A's answers to system B's?

`export_ab` turns an eval run's `samples.jsonl` into pairs a reviewer judges without knowing which
system wrote which response: `ab.csv` (fill in a spreadsheet) or `ab.html` (a self-contained form
that downloads the same CSV). The order of each pair is randomised and recorded only in
`ab_key.json`, which stays with the experimenter. `import_ab` reads the filled CSV back, un-blinds it
with the key and reports wins, ties and a two-sided exact sign test.
"""

from __future__ import annotations

import csv
import html
import json
import random
from pathlib import Path

from scipy.stats import binomtest

from tuneloop.artifacts import write_csv, write_json
from tuneloop.errors import TuneloopError
from tuneloop.layout import AbDir

COLUMNS = ["id", "prompt", "response_1", "response_2", "judgment", "comment"]
# Spreadsheet users type all sorts of "no preference"; accept the obvious ones.
JUDGMENTS = {"1": "1", "2": "2", "tie": "tie", "=": "tie", "same": "tie"}
ALLOWED = "1, 2, tie (or = / same), or blank"


def _read_samples(path: Path) -> list[dict]:
    if not path.is_file():
        raise TuneloopError(f"{path}: file not found; run `tuneloop eval` first and pass its samples.jsonl")
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TuneloopError(f"{path}:{number}: not valid JSON ({exc.msg}); re-run `tuneloop eval`") from None
    if not samples:
        raise TuneloopError(f"{path}: no samples; re-run `tuneloop eval` on a non-empty test split")
    return samples


def _render_prompt(prompt) -> str:
    # Show every turn, system prompt included: the reviewer judges the answer to what the model saw.
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{turn.get('role', '?')}: {turn.get('content', '')}" for turn in prompt)


def export_ab(samples_path: Path, out: Path, system_a: str = "finetuned", system_b: str = "base",
              seed: int = 0, limit: int | None = None) -> dict:
    """Write ab.csv, ab.html (for the reviewer) and ab_key.json (hidden order) into `out`."""
    samples_path, out = Path(samples_path), Path(out)
    samples = _read_samples(samples_path)[:limit]
    available = sorted({name for sample in samples for name in sample.get("outputs", {})})
    for system in (system_a, system_b):
        if system not in available:
            raise TuneloopError(f"{samples_path}: no outputs for system {system!r}; the systems there are "
                                f"{', '.join(available) or 'none'}; pick two of them")
    if system_a == system_b:
        raise TuneloopError(f"system_a and system_b are both {system_a!r}; pick two different systems")

    rng = random.Random(seed)
    rows, key = [], {}
    for index, sample in enumerate(samples):
        outputs = sample.get("outputs", {})
        missing = [s for s in (system_a, system_b) if s not in outputs]
        if missing:
            raise TuneloopError(f"{samples_path}: sample {index + 1} has no output for {', '.join(missing)}; "
                                "re-run `tuneloop eval` with both systems")
        # Draw for every sample, identical or not, so one pair's order does not depend on the others.
        order = (system_a, system_b) if rng.random() < 0.5 else (system_b, system_a)
        # A letter prefix keeps spreadsheets from turning ids into numbers and stripping zeros.
        pair_id = f"q{index + 1:04d}"
        key[pair_id] = {"response_1": order[0], "response_2": order[1]}
        if outputs[system_a] == outputs[system_b]:
            # Nothing to judge; asking would waste the reviewer's time and bias them towards "tie".
            key[pair_id]["identical"] = True
            continue
        rows.append({"id": pair_id, "prompt": _render_prompt(sample.get("prompt", "")),
                     "response_1": outputs[order[0]], "response_2": outputs[order[1]],
                     "judgment": "", "comment": ""})

    out.mkdir(parents=True, exist_ok=True)
    folder = AbDir(out)
    write_csv(folder.csv, COLUMNS, rows)
    folder.html.write_text(_render_html(rows), encoding="utf-8")
    write_json(folder.key, {"system_a": system_a, "system_b": system_b, "seed": seed, "pairs": key})
    return {"csv": folder.csv, "html": folder.html, "key": folder.key,
            "pairs": len(rows), "identical": len(key) - len(rows), "system_a": system_a, "system_b": system_b}


def _render_html(rows: list[dict]) -> str:
    cards = []
    for row in rows:
        pid = html.escape(row["id"])
        radios = "".join(f'<label><input type="radio" name="j-{pid}" value="{v}"> {label}</label> '
                         for v, label in (("1", "Response 1"), ("2", "Response 2"), ("tie", "Tie")))
        cards.append(
            f'<section><h2>{pid}</h2><pre class="prompt">{html.escape(row["prompt"])}</pre>'
            f'<div class="pair"><div><h3>Response 1</h3><pre>{html.escape(row["response_1"])}</pre></div>'
            f'<div><h3>Response 2</h3><pre>{html.escape(row["response_2"])}</pre></div></div>'
            f'<p>{radios}</p><textarea id="c-{pid}" rows="2" placeholder="comment (optional)"></textarea></section>')
    # Escape "<", ">" and "&" so response text can never close the <script> tag it is embedded in.
    data = json.dumps(rows).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Blind A/B review</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: auto; padding: 1em; }}
section {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
pre {{ white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: 0.5em; }}
pre.prompt {{ background: #eef3fb; }}
textarea {{ width: 100%; }}
</style></head><body>
<h1>Blind A/B review</h1>
<p>For each prompt, pick the better response (or Tie), then press the button to save a CSV of your
judgments and send that file back. Nothing is sent anywhere by this page.</p>
{''.join(cards)}
<p><button id="save">Download judgments (CSV)</button> <span id="status"></span></p>
<script type="application/json" id="data">{data}</script>
<script>
const rows = JSON.parse(document.getElementById("data").textContent);
const cols = {json.dumps(COLUMNS)};
const quote = v => '"' + String(v).replace(/"/g, '""') + '"';
document.getElementById("save").onclick = () => {{
  let done = 0;
  const lines = [cols.map(quote).join(",")];
  for (const row of rows) {{
    const picked = document.querySelector('input[name="j-' + row.id + '"]:checked');
    if (picked) done++;
    const filled = Object.assign({{}}, row, {{judgment: picked ? picked.value : "",
                                             comment: document.getElementById("c-" + row.id).value}});
    lines.push(cols.map(c => quote(filled[c])).join(","));
  }}
  const blob = new Blob([lines.join("\\r\\n") + "\\r\\n"], {{type: "text/csv;charset=utf-8"}});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "ab_judgments.csv";
  link.click();
  document.getElementById("status").textContent = done + " of " + rows.length + " judged";
}};
</script></body></html>
"""


def read_pairs(folder: Path) -> list[dict]:
    """The blind pairs of an export (ab.csv's rows), with the judgments saved so far (ab_judgments.csv) filled in."""
    ab = AbDir(Path(folder))
    if not ab.csv.is_file() or not ab.key.is_file():
        raise TuneloopError(f"{ab.root}: no blind A/B export here (ab.csv and ab_key.json); run `tuneloop eval ab-export`")
    rows = _read_csv(ab.csv)
    saved = {row["id"]: row for row in _read_csv(ab.judgments)} if ab.judgments.is_file() else {}
    for row in rows:
        done = saved.get(row["id"], {})
        row["judgment"], row["comment"] = done.get("judgment") or row.get("judgment", ""), done.get("comment") or row.get("comment", "")
    return rows


def save_judgments(folder: Path, judgments: dict[str, tuple[str, str]]) -> Path:
    """Write ab_judgments.csv: every pair of ab.csv with `judgments[id] = (judgment, comment)` filled in, in
    the form `import_ab` reads. A judgment outside 1, 2, tie (or blank) is refused before anything is written."""
    ab = AbDir(Path(folder))
    rows = read_pairs(ab.root)
    known = {row["id"] for row in rows}
    for pid, (judgment, _) in judgments.items():
        if pid not in known:
            raise TuneloopError(f"{ab.csv}: no pair {pid!r}")
        if judgment and judgment.lower() not in JUDGMENTS:
            raise TuneloopError(f"pair {pid}: judgment {judgment!r} is not valid; use {ALLOWED}")
    for row in rows:
        if row["id"] in judgments:
            row["judgment"], row["comment"] = judgments[row["id"]]
    return write_csv(ab.judgments, COLUMNS, rows)


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [{k: v or "" for k, v in row.items() if k} for row in csv.DictReader(handle)]


def import_ab(judgments_csv: Path, key_path: Path) -> dict:
    """Un-blind a filled ab.csv with ab_key.json and report wins, ties and a two-sided sign test."""
    judgments_csv, key_path = Path(judgments_csv), Path(key_path)
    for path in (judgments_csv, key_path):
        if not path.is_file():
            raise TuneloopError(f"{path}: file not found; pass the filled ab.csv and the ab_key.json beside it")
    key = json.loads(key_path.read_text(encoding="utf-8"))
    pairs = key["pairs"]
    verdicts: dict[str, str] = {pid: "tie" for pid, pair in pairs.items() if pair.get("identical")}
    seen: set[str] = set()
    # utf-8-sig: spreadsheets (and the HTML form, for them) put a byte-order mark in front.
    with open(judgments_csv, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if "id" not in header or "judgment" not in header:
            raise TuneloopError(f"{judgments_csv}:1: header must contain the columns id and judgment "
                                f"(found {', '.join(header) or 'nothing'}); use the ab.csv written by export")
        start = reader.line_num + 1
        for record in reader:
            # A quoted field may span several lines; report the line the record starts on.
            line, start = start, reader.line_num + 1
            if not any(field.strip() for field in record):
                continue
            record += [""] * (len(header) - len(record))
            row = dict(zip(header, record))
            pid, raw = row["id"].strip(), row["judgment"].strip()
            if pid not in pairs:
                raise TuneloopError(f"{judgments_csv}:{line}: unknown id {pid!r}; this CSV does not belong to "
                                    f"{key_path}, or the id was edited")
            if pid in seen:
                raise TuneloopError(f"{judgments_csv}:{line}: id {pid!r} appears twice; keep one row per id")
            seen.add(pid)
            if not raw:
                continue
            if raw.lower() not in JUDGMENTS:
                raise TuneloopError(f"{judgments_csv}:{line}: judgment {raw!r} for {pid} is not valid; "
                                    f"use {ALLOWED}")
            choice = JUDGMENTS[raw.lower()]
            verdicts[pid] = "tie" if choice == "tie" else pairs[pid][f"response_{choice}"]

    system_a, system_b = key["system_a"], key["system_b"]
    wins_a = sum(v == system_a for v in verdicts.values())
    wins_b = sum(v == system_b for v in verdicts.values())
    ties = sum(v == "tie" for v in verdicts.values())
    decided = wins_a + wins_b
    # Sign test: under "no preference" each decided pair is a fair coin; ties carry no information.
    p_value = float(binomtest(wins_a, decided, 0.5).pvalue) if decided else None
    return {"system_a": system_a, "system_b": system_b, "wins_a": wins_a, "wins_b": wins_b, "ties": ties,
            "unjudged": len(pairs) - len(verdicts), "n": len(pairs),
            "win_rate_a": wins_a / decided if decided else None, "p_value": p_value,
            "significant": p_value is not None and p_value < 0.05}
