"""GRPO after a deliberately weak SFT on the ticket-triage example, with the embedded SmolLM2-135M-Instruct.

    python benchmarks/grpo_ticket_triage.py [--sft-steps 8] [--grpo-steps 30] [--out runs/grpo-triage]
        [--set train.learning_rate=5e-4 --set 'objective.reward={type: multi, ...}' ...]

1. `data prepare` the shipped example (examples/ticket_triage/pipeline.yaml): train / val / protected test;
2. a weak SFT: `--sft-steps` LoRA steps (the demo takes 40 to pass every gate);
3. export it (LoRA merged into the base): the starting policy *and* GRPO's reference;
4. GRPO (examples/ticket_triage/grpo.yaml) on the merged model, its reward the objective's gates;
5. evaluate on the protected test split: `base` is the weak SFT model, `finetuned` is SFT + GRPO, so the
   report's paired bootstrap differences are GRPO's effect, with 95% intervals.

Prints a markdown table (metric, SFT, SFT + GRPO, difference and its interval) and the reward curve's
points; every stage's folder stays under --out. `--set KEY=VALUE` overrides grpo.yaml (VALUE is read as
YAML); a rerun with other settings reuses the data, SFT and export and writes `grpo-TAG/`, `eval-TAG/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tuneloop.config import load_config  # noqa: E402
from tuneloop.data.prepare import prepare  # noqa: E402
from tuneloop.eval.evaluate import evaluate  # noqa: E402
from tuneloop.models import trained_weights  # noqa: E402
from tuneloop.models.export import export_run  # noqa: E402
from tuneloop.train.trainer import train  # noqa: E402

METRICS = ("json_valid", "schema_valid", "category_accuracy", "priority_accuracy", "exact_match")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--grpo-steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-triage"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a grpo.yaml setting")
    parser.add_argument("--tag", default="", help="name of this GRPO run's folders (grpo-TAG, eval-TAG)")
    args = parser.parse_args()
    overrides = dict(_setting(text) for text in args.set)
    started = time.time()
    example = ROOT / "examples" / "ticket_triage"
    sft_cfg = load_config(example / "pipeline.yaml", {"train.max_steps": args.sft_steps, "train.eval_every": 0})
    out = args.out
    data = out / "data"
    if not (data / "manifest.json").is_file():
        prepare(sft_cfg.data.inputs, data, sft_cfg.data, sft_cfg.task, sft_cfg.model)
    if not (out / "sft" / "manifest.json").is_file():
        train(sft_cfg.train, sft_cfg.model, data, out / "sft", criteria=sft_cfg.objective)
    if not (out / "sft-export" / "model" / "config.json").is_file():
        export_run(out / "sft", out / "sft-export")
    merged = str((out / "sft-export" / "model").resolve())
    grpo_cfg = load_config(example / "grpo.yaml", {"model.name": merged, "train.max_steps": args.grpo_steps, **overrides})
    suffix = f"-{args.tag}" if args.tag else ""
    grpo_dir, eval_dir = out / f"grpo{suffix}", out / f"eval{suffix}"
    grpo_started = time.time()
    if not (grpo_dir / "manifest.json").is_file():
        train(grpo_cfg.train, grpo_cfg.model, data, grpo_dir, criteria=grpo_cfg.objective)
    grpo_s = time.time() - grpo_started
    eval_cfg = grpo_cfg.eval.model_copy(update={"systems": ["base", "finetuned"], "regression": False, "edge_cases": None})
    results = evaluate(eval_cfg, grpo_cfg.model, grpo_cfg.task, grpo_cfg.objective, data, trained_weights(grpo_dir), eval_dir)

    records = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    base, tuned = results["systems"]["base"], results["systems"]["finetuned"]
    differences = results["differences"]["base"]
    print(f"\n## GRPO after a weak SFT: ticket triage, SmolLM2-135M-Instruct ({results['n_test']} protected test rows)\n")
    settings = "".join(f" --set '{text}'" for text in args.set)
    print(f"`python benchmarks/grpo_ticket_triage.py --sft-steps {args.sft_steps} --grpo-steps {args.grpo_steps}{settings}` "
          f"(GRPO {grpo_s / 60:.1f} min, all {(time.time() - started) / 60:.1f} min)\n")
    print("| metric | SFT (weak) | SFT + GRPO | difference | 95% interval (paired bootstrap) | beyond the interval |")
    print("|---|---:|---:|---:|---|---|")
    for metric in METRICS:
        if metric in differences:
            d = differences[metric]
            print(f"| {metric} | {base[metric]:.3f} | {tuned[metric]:.3f} | {d['diff']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | "
                  f"{'yes' if d['low'] > 0 else 'no'} |")
    val = [(r["step"], round(r["val_reward"], 3)) for r in records if "val_reward" in r]
    train_reward = [round(r["reward"], 3) for r in records]
    print(f"\nvalidation reward (greedy) by step: {val}")
    print(f"training reward (sampled) by step: {train_reward}")
    print(f"KL at the end {records[-1]['kl']:.4f}, answer tokens {records[-1]['completion_length']:.1f}, grader errors "
          f"{sum(r['grader_errors'] for r in records):.0f}; report {eval_dir / 'report.html'}, curves {grpo_dir / 'loss.png'}")


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {text!r}: expected KEY=VALUE, e.g. train.learning_rate=5e-4")
    return key.strip(), yaml.safe_load(value)


if __name__ == "__main__":
    main()
