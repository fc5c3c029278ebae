"""tuneloop's GRPO against TRL's GRPOTrainer, side by side, on the same model, prompts, group size and reward.

    pip install -e '.[bench]'                                        # TRL: a benchmark-only dependency
    .venv/bin/python benchmarks/grpo_vs_trl.py                       # the comparison, printed
    .venv/bin/python benchmarks/grpo_vs_trl.py --steps 12 --rounds 1 # a quick check (a few minutes on 2 cores)

Both sides get the same Llama built from a config with seed 0 (SmolLM2's tokenizer and chat template, random
weights, fp32), the same prompts (the shipped ticket-triage tickets with a system prompt, deduplicated; the
prompt is every message before the assistant's answer, rendered by the same chat template on both sides, which
is checked token for token before the runs), the same reward (1.0 when the answer contains a given string,
else 0.0: tuneloop's `string_check` grader with operation `like`, a plain Python function for TRL), the same
number of prompts and sampled answers per optimizer step, the same answer length limit, temperature 1 without
top-p/top-k, the same LoRA (every linear layer, dropout 0), AdamW at a constant learning rate without warm-up,
clipping at 1, the same KL coefficient beta towards the starting model (adapters off) and clip range epsilon,
advantages (r - group mean) / (group std + 1e-4), one update per rollout, the loss averaged over every answer
token of the step (TRL's loss_type "dapo", its default), no gradient checkpointing.

The reward string defaults to the lowercase letter whose chance to appear in `--max-new-tokens` tokens drawn
uniformly from the vocabulary is closest to one half: a random model then earns about half its answers, so the
groups have reward spread to learn from (a common letter such as "e" would be in nearly every answer: no
advantage, no learning signal).

Each run is a fresh child process of this one, in the same environment (threads, allocator variables, offline
hub); the sides alternate round by round, the order flipping every round. Reported per side (median over the
rounds): optimizer steps/s over the timed steps (all steps after the first `--warmup`: a thread polls each
side's step counter every 5 ms, the same way on both sides, and the rate is timed steps over the time from the
end of the last warm-up step to the end of the last step), peak RSS of the child (`ru_maxrss`), the mean reward
of the first and last `--window` steps, the mean answer length in tokens and the last steps' KL.

Left different (neither can be set to the other's): the order in which prompts are drawn (each side shuffles
with its own sampler from seed 0); TRL also computes every answer token's entropy for its logs in the loss
forward; TRL decodes answers with its own GenerationConfig, tuneloop with the model's; both use transformers'
`generate` with its KV cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_trl import _write_section, truncate_vocabulary  # noqa: E402  (one tokenizer cut and one RESULTS.md writer)

SECTION = "## GRPO vs TRL"
SIDES = {"tuneloop": "tuneloop GRPO (LoRA)", "trl": "TRL GRPOTrainer (LoRA)"}
SYSTEM = "Triage the support ticket. Reply with JSON only."  # as benchmarks/train_speed.py
POLL_S = 0.005


# --- data, model and reward ----------------------------------------------------------------------

def model_shape(hidden: int, layers: int) -> dict:
    """A Llama of SmolLM2's kind at a chosen size: 64-wide heads, grouped KV, a SwiGLU of 8/3 x hidden."""
    heads = max(1, hidden // 64)
    return {"hidden_size": hidden, "intermediate_size": round(hidden * 8 / 3 / 64) * 64, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": 2 if heads % 2 == 0 else 1, "head_dim": hidden // heads,
            "max_position_embeddings": 1024, "tie_word_embeddings": True}


def ticket_prompts(limit: int) -> list[dict]:
    """The shipped ticket-triage rows as chat rows (system, user, assistant), malformed rows and repeated prompts left out."""
    rows, seen = [], set()
    for line in (ROOT / "examples/ticket_triage/tickets.jsonl").read_text().splitlines():
        try:  # the example ships a few deliberately malformed rows for the data stage to reject
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        messages = row.get("messages") if isinstance(row, dict) else None
        if not (isinstance(messages, list) and len(messages) >= 2 and messages[-1].get("role") == "assistant"
                and all(isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                        and m["content"].strip() for m in messages)):
            continue
        key = json.dumps(messages[:-1])
        if key not in seen:
            seen.add(key)
            rows.append({"messages": [{"role": "system", "content": SYSTEM}, *messages]})
    return rows[:limit]


def prepare(work: Path, args) -> dict:
    """Tokenizer + random model folder, tuneloop's data folder and TRL's prompts; returns what the report needs."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneloop.models import load_tokenizer, resolve_model

    embedded = resolve_model("smollm2-135m-instruct")
    load_tokenizer(embedded).save_pretrained(work / "model")
    if args.vocab < 49152:
        truncate_vocabulary(work / "model/tokenizer.json", args.vocab)
    config = AutoConfig.from_pretrained(embedded)
    for key, value in {**model_shape(args.hidden, args.layers), "vocab_size": args.vocab}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(work / "model")
    tokenizer = load_tokenizer(str(work / "model"))
    rows = ticket_prompts(args.rows)
    (work / "data").mkdir()
    (work / "data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "prompts.json").write_text(json.dumps([r["messages"][:-1] for r in rows]))
    lengths = same_prompt_tokens(tokenizer, work)
    reward, chance = (args.reward_string, None)
    if reward == "auto":
        reward, chance = reward_string(tokenizer, args.vocab, args.max_new_tokens)
    if not reward.strip() or reward != reward.strip():
        raise SystemExit("--reward-string: tuneloop's grader sees the answer stripped, TRL's does not; use a string without "
                         "leading or trailing spaces")
    return {"rows": len(rows), "prompt_tokens": lengths, "params": sum(p.numel() for p in model.parameters()),
            "reward": reward, "chance": chance, "max_seq_len": max(512, max(lengths) + args.max_new_tokens)}


def same_prompt_tokens(tokenizer, work: Path) -> list[int]:
    """Every prompt's tokens as tuneloop's GRPO reads them and as TRL renders them must be the same; their lengths."""
    from tuneloop.train.prompts import read_prompts

    ours = [p.ids for p in read_prompts(tokenizer, work / "data/train.jsonl")]
    theirs = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
              for m in json.loads((work / "prompts.json").read_text())]
    if ours != theirs:
        raise SystemExit("the two sides' prompt tokens differ; the comparison would not be like for like")
    return [len(ids) for ids in ours]


def reward_string(tokenizer, vocab: int, max_new_tokens: int) -> tuple[str, float]:
    """The lowercase letter a random model's answer contains about half of the time, and that chance."""
    special = set(tokenizer.all_special_ids)
    texts = [tokenizer.decode([i]) for i in range(vocab) if i not in special]
    chances = {c: 1 - (1 - sum(c in t for t in texts) / len(texts)) ** max_new_tokens for c in string.ascii_lowercase}
    letter = min(chances, key=lambda c: abs(chances[c] - 0.5))
    return letter, chances[letter]


# --- one run (child process) ---------------------------------------------------------------------

class StepClock:
    """When each optimizer step ended: a thread polls the side's step counter every POLL_S seconds."""

    def __init__(self, count):
        self.count, self.times = count, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "StepClock":
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._catch_up()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self._catch_up()

    def _catch_up(self) -> None:
        done, now = self.count(), time.perf_counter()
        self.times += [now] * (done - len(self.times))


def run_tuneloop(work: Path, args) -> dict:
    from tuneloop.config import ModelConfig, ObjectiveConfig, TrainConfig
    from tuneloop.layout import TrainDir
    from tuneloop.train.trainer import train

    cfg = TrainConfig.model_validate({
        "objective": "grpo", "method": "lora", "precision": "fp32", "batch_size": args.prompts_per_step, "grad_accum": 1,
        "max_steps": args.steps, "learning_rate": args.lr, "warmup_ratio": 0.0, "scheduler": "constant", "weight_decay": 0.0,
        "max_grad_norm": 1.0, "max_seq_len": args.max_seq_len, "seed": 0, "tensorboard": False, "eval_every": 0,
        "gradient_checkpointing": False, "lora": {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": 0.0},
        "grpo": {"group_size": args.group_size, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 1.0,
                 "beta": args.beta, "epsilon": args.epsilon, "scale_rewards": True},
    })
    criteria = ObjectiveConfig.model_validate(
        {"reward": {"type": "string_check", "name": "contains", "operation": "like", "reference": args.reward}})
    out = work / f"tuneloop-{os.getpid()}"
    metrics = TrainDir(out).metrics
    with StepClock(lambda: metrics.read_bytes().count(b"\n") if metrics.is_file() else 0) as clock:
        summary = train(cfg, ModelConfig(name=str(work / "model")), work / "data", out, criteria=criteria)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    return {"times": [t - clock.started for t in clock.times], "steps": summary["steps"], "loop_s": summary["loop_s"],
            "peak_rss_mb": peak, "reward": [r["reward"] for r in records], "length": [r["completion_length"] for r in records],
            "kl": [r.get("kl", 0.0) for r in records]}


def run_trl(work: Path, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from tuneloop.models import load_tokenizer

    wanted = args.reward

    def contains(completions, **kwargs) -> list[float]:
        return [1.0 if wanted in c[-1]["content"] else 0.0 for c in completions]

    tokenizer = load_tokenizer(str(work / "model"))
    prompts = Dataset.from_list([{"prompt": p} for p in json.loads((work / "prompts.json").read_text())])
    config = GRPOConfig(
        output_dir=str(work / f"trl-{os.getpid()}"), per_device_train_batch_size=args.prompts_per_step * args.group_size,
        gradient_accumulation_steps=1, num_generations=args.group_size, max_completion_length=args.max_new_tokens,
        max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, seed=0, temperature=1.0, top_p=1.0, top_k=0, beta=args.beta, epsilon=args.epsilon,
        num_iterations=1, loss_type="dapo", scale_rewards="group",
        # TRL multiplies the KL term by the (detached-in-value, 1) probability ratio by default, which changes its
        # gradient; tuneloop's KL term is the plain k3 estimate, so both take that one.
        use_bias_correction_kl=False,
        gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, use_vllm=False, logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[contains], args=config, train_dataset=prompts, processing_class=tokenizer,
                          peft_config=lora)
    tick = time.perf_counter()
    with StepClock(lambda: trainer.state.global_step) as clock:
        trainer.train()
    loop_s = time.perf_counter() - tick
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"times": [t - clock.started for t in clock.times], "steps": trainer.state.global_step, "loop_s": loop_s,
            "peak_rss_mb": peak, "reward": [h["reward"] for h in logs], "length": [h["completions/mean_length"] for h in logs],
            "kl": [h.get("kl", 0.0) for h in logs]}


def child(args) -> None:
    import torch

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    result = (run_tuneloop if args.child == "tuneloop" else run_trl)(work, args)
    print("RESULT " + json.dumps({**result, "process_s": time.perf_counter() - started}), flush=True)


# --- the comparison ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default="tuneloop,trl", help="comma-separated, from: " + ", ".join(SIDES))
    parser.add_argument("--rounds", type=int, default=3, help="run the sides this many times, alternating (median reported)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of steps/s")
    parser.add_argument("--window", type=int, default=3, help="steps averaged for the first and last reward")
    parser.add_argument("--group-size", type=int, default=4, help="sampled answers per prompt (TRL: num_generations)")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length limit (TRL: max_completion_length)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (tuneloop's default; TRL's is 0)")
    parser.add_argument("--epsilon", type=float, default=0.2)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch compute threads of each side")
    parser.add_argument("--hidden", type=int, default=384, help="the model's hidden size (64-wide heads)")
    parser.add_argument("--layers", type=int, default=9, help="the model's decoder layers")
    parser.add_argument("--vocab", type=int, default=49152, choices=(16384, 49152), help="the model's vocabulary size")
    parser.add_argument("--rows", type=int, default=256, help="ticket prompts in the data set")
    parser.add_argument("--reward-string", default="auto", help="reward 1 when the answer contains it; auto: see above")
    parser.add_argument("--tuned-malloc", action="store_true",
                        help="give both sides MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_=1 GiB (else the environment as it is)")
    parser.add_argument("--write", action="store_true", help="also write the table to the 'GRPO vs TRL' section of --out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    for hidden in ("--child", "--work", "--reward", "--max-seq-len"):
        parser.add_argument(hidden, help=argparse.SUPPRESS, type=int if hidden == "--max-seq-len" else str)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")

    work = Path(tempfile.mkdtemp(prefix="grpo-vs-trl-"))
    try:
        compare(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(work: Path, args) -> None:
    sides = args.sides.split(",")
    stats = prepare(work, args)
    args.reward, args.max_seq_len = stats["reward"], stats["max_seq_len"]
    chance = f", {stats['chance']:.0%} of uniformly random answers" if stats["chance"] is not None else ""
    print(f"data: {stats['rows']} prompts of {min(stats['prompt_tokens'])}-{max(stats['prompt_tokens'])} tokens, the same on both "
          f"sides; model {stats['params'] / 1e6:.1f}M parameters; reward: contains {args.reward!r}{chance}", flush=True)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for round_ in range(args.rounds):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            result = _run_child(side, work, args)
            runs[side].append(result)
            print(f"round {round_ + 1} {side}: {result['steps_per_s']:.3f} steps/s, {result['peak_rss_mb']:.0f} MB, reward "
                  f"{result['reward_first']:.2f} -> {result['reward_last']:.2f}, {result['completion_length']:.1f} tokens/answer",
                  flush=True)
    table = _table(runs, stats, args)
    print(table)
    if args.write:
        _write_section(args.out, SECTION, table)


def _environment(args) -> dict:
    """The one environment both sides run in."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TUNELOOP_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if args.tuned_malloc:
        env |= {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    return env


def _run_child(side: str, work: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", side, "--work", str(work), "--reward", args.reward,
               "--max-seq-len", str(args.max_seq_len)]
    for option in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "lr", "beta", "epsilon", "lora_r", "lora_alpha",
                   "threads"):
        command += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    done = subprocess.run(command, capture_output=True, text=True, env=_environment(args))
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{side} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    times, w, k = result["times"], args.warmup, max(1, min(args.window, len(result["reward"]) // 2))
    if len(times) != args.steps or len(result["reward"]) != args.steps:
        raise SystemExit(f"{side}: {len(times)} step times and {len(result['reward'])} step records for {args.steps} steps")
    result |= {"steps_per_s": (args.steps - w) / (times[-1] - (times[w - 1] if w else 0.0)),
               "reward_first": statistics.mean(result["reward"][:k]), "reward_last": statistics.mean(result["reward"][-k:]),
               "completion_length": statistics.mean(result["length"]), "kl_last": statistics.mean(result["kl"][-k:])}
    return result


def _median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _table(runs: dict[str, list[dict]], stats: dict, args) -> str:
    import peft
    import torch
    import transformers
    import trl

    peer = runs.get("trl")
    k = max(1, min(args.window, args.steps // 2))
    rows = [f"| side | steps/s | / TRL | peak RSS (MB) | / TRL | reward, first {k} -> last {k} steps | answer tokens (mean) | "
            f"KL, last {k} steps | loop (s) | process (s) |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for side, results in runs.items():
        speed, rss = _median(results, "steps_per_s"), _median(results, "peak_rss_mb")
        vs = {k: f"{_median(results, k) / _median(peer, k):.2f}x" if peer else "-" for k in ("steps_per_s", "peak_rss_mb")}
        rows.append(f"| {SIDES[side]} | {speed:.3f} | {vs['steps_per_s']} | {rss:,.0f} | {vs['peak_rss_mb']} | "
                    f"{_median(results, 'reward_first'):.3f} -> {_median(results, 'reward_last'):.3f} | "
                    f"{_median(results, 'completion_length'):.1f} | {_median(results, 'kl_last'):.4f} | "
                    f"{_median(results, 'loop_s'):.1f} | {_median(results, 'process_s'):.1f} |")
    options = [f"--sides {','.join(runs)}", f"--steps {args.steps}", f"--rounds {args.rounds}", f"--warmup {args.warmup}",
               f"--group-size {args.group_size}", f"--prompts-per-step {args.prompts_per_step}",
               f"--max-new-tokens {args.max_new_tokens}", f"--threads {args.threads}", f"--hidden {args.hidden}",
               f"--layers {args.layers}", f"--vocab {args.vocab}", f"--lr {args.lr:g}", f"--beta {args.beta:g}"]
    options += [f"--reward-string {args.reward_string}"] if args.reward_string != "auto" else []
    options += ["--tuned-malloc"] if args.tuned_malloc else []
    malloc = {k: v for k, v in _environment(args).items() if k.startswith("MALLOC_")}
    shape = model_shape(args.hidden, args.layers)
    lengths = stats["prompt_tokens"]
    chance = f" (a uniformly random answer contains it {stats['chance']:.0%} of the time)" if stats["chance"] is not None else ""
    return "\n".join([
        SECTION, "",
        f"Command: `.venv/bin/python benchmarks/grpo_vs_trl.py {' '.join(options)}` ({date.today()})", "",
        f"{os.cpu_count()} CPU threads on the machine ({platform.processor() or platform.machine()}), {args.threads} torch threads per "
        f"side; allocator: {', '.join(f'{k}={v}' for k, v in malloc.items()) or 'glibc defaults'}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}. Model: Llama "
        f"{shape['hidden_size']} hidden x {shape['num_hidden_layers']} layers ({stats['params'] / 1e6:.1f}M parameters), vocabulary "
        f"{args.vocab:,} (SmolLM2's tokenizer{', cut to its first ' + format(args.vocab, ',') + ' ids' if args.vocab < 49152 else ''}), "
        f"random weights (seed 0), fp32. Prompts: {stats['rows']} ticket-triage tickets with a system prompt, "
        f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), identical token ids on both sides. Reward: "
        f"1 when the answer contains {args.reward!r}{chance}, else 0. Per optimizer step {args.prompts_per_step} prompts x "
        f"{args.group_size} answers of at most {args.max_new_tokens} tokens, temperature 1; LoRA r {args.lora_r} / alpha "
        f"{args.lora_alpha:g} / dropout 0 on every linear layer; AdamW, constant lr {args.lr:g}, clipping at 1; beta {args.beta:g}, "
        f"epsilon {args.epsilon:g}, group-std advantages, one update per rollout, loss over every answer token of the step "
        f"(TRL loss_type dapo, use_bias_correction_kl off), no gradient checkpointing. {args.steps} steps per run, steps/s over "
        f"steps {args.warmup + 1}-{args.steps} (the first {args.warmup} left out as warm-up); {args.rounds} round(s), the sides "
        f"alternating, median shown. Not matched: the order prompts are drawn in (each side's own shuffle, seed 0); TRL also "
        f"computes per-token entropies for its logs.", "",
        *rows, "",
    ])


if __name__ == "__main__":
    main()
