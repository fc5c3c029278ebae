"""GRPO: the loss and advantages against a hand-computed case, zero KL at step 0, the reward rising on a tiny
model with a grader that rewards one kind of answer, an exact resume, and graders that fail never stopping the run."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tuneloop.config import ModelConfig, ObjectiveConfig, TaskConfig, TrainConfig
from tuneloop.train.distributed import World
from tuneloop.train.grpo import Grpo, group_advantages, grpo_token_loss
from tuneloop.train.methods import build_model, placement
from tuneloop.train.trainer import train

# The reward: a blank answer (its one token is whitespace or an end token). The peaked tiny model below says one
# about 1 time in 10 (the tied embeddings make it echo the prompt's last token, a newline), so groups differ at once.
BLANK = {"reward": {"type": "string_check", "name": "blank", "operation": "eq", "reference": ""}}
GRPO = dict(method="full", objective="grpo", batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, scheduler="constant",
            max_seq_len=128, tensorboard=False, grpo={"group_size": 8, "max_new_tokens": 1, "temperature": 1.0})


@pytest.fixture(scope="module")
def peaked_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with its final norm's gain at 8: sharper next-token distributions than at random init."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.fill_(8.0)
    path = tmp_path_factory.mktemp("peaked")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_advantages_are_relative_to_the_group_and_scaled_by_its_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    advantages = group_advantages(rewards)
    std = math.sqrt((4 * 0.25) / 3)  # unbiased, as TRL's
    assert torch.allclose(advantages[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(advantages[1], torch.zeros(4))  # a group that all scored the same teaches nothing
    assert torch.allclose(group_advantages(rewards, scale=False)[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_token_loss_matches_a_hand_computed_case():
    logps = torch.tensor([-1.0, -2.0, -0.5, -0.5], requires_grad=True)
    old = torch.tensor([-1.0, -2.0, -0.5 - math.log(1.5), -0.5 - math.log(1.5)])  # last two: ratio 1.5
    reference = torch.tensor([-0.9, -2.0, -0.5, -0.5])
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, terms = grpo_token_loss(logps, old, reference, advantages, epsilon=0.2, beta=0.1)
    kl0 = math.exp(0.1) - 0.1 - 1  # k3 estimate with ref - logp = 0.1
    expected = [-1.0 + 0.1 * kl0, 1.0, -1.2, 1.5]  # ratio 1.5: A>0 is clipped to 1.2, A<0 keeps -1.5 (the min)
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)
    assert terms["clipped"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert terms["kl"][0].item() == pytest.approx(kl0, abs=1e-6) and terms["kl"][1:].abs().max() == 0
    loss.sum().backward()
    # ratio 1: d/dlogp of -ratio*A is -A; the KL adds beta * (1 - exp(ref - logp)); a clipped token has no gradient
    assert logps.grad[0].item() == pytest.approx(-1.0 + 0.1 * (1 - math.exp(0.1)), abs=1e-6)
    assert logps.grad[1].item() == pytest.approx(1.0)
    assert logps.grad[2].item() == 0.0
    assert logps.grad[3].item() == pytest.approx(1.5)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kl_is_zero_at_step_zero_and_the_step_reports_its_metrics(data_dir, peaked_model, tokenizer, method):
    cfg = TrainConfig.model_validate({**GRPO, "method": method})
    objective = Grpo(tokenizer, data_dir, cfg, ObjectiveConfig.model_validate(BLANK))
    where = placement(cfg)
    model = build_model(ModelConfig(name=str(peaked_model)), cfg, where)
    objective.attach(model)
    batch = objective.collate(objective.batches(0)[0])
    stats = objective.step(model, [batch], World(), where)
    assert stats["kl"] == 0.0  # LoRA's B starts at zero, the full model's reference is its copy: the policy is the reference
    assert 0.0 <= stats["reward"] <= 1.0 and stats["clip_fraction"] == 0.0 and stats["grader_errors"] == 0
    assert stats["completion_length"] == 1 and stats["tokens"] > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_grpo_raises_the_mean_reward(tmp_path, data_dir, peaked_model):
    cfg = TrainConfig.model_validate({**GRPO, "max_steps": 30, "eval_every": 10, "tensorboard": True})
    summary = train(cfg, ModelConfig(name=str(peaked_model)), data_dir, tmp_path / "run", criteria=ObjectiveConfig.model_validate(BLANK))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = (sum(r["reward"] for r in part) / len(part) for part in (records[:3], records[-5:]))
    assert first < 0.3 and last > 0.8, (first, last)
    assert records[-1]["val_reward"] > records[9]["val_reward"] or records[9]["val_reward"] == 1.0
    assert {"reward_std", "kl", "completion_length", "clip_fraction", "grader_errors", "train_loss"} <= records[-1].keys()
    assert "val_reward" in records[9] and summary["selected_by"] == "val_reward"
    assert records[-1]["kl"] > 0  # the policy moved away from the reference
    assert (tmp_path / "run" / "model").is_dir() and (tmp_path / "run" / "loss.png").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_a_resumed_grpo_run_equals_an_unbroken_one(tmp_path, data_dir, peaked_model):
    criteria = ObjectiveConfig.model_validate(BLANK)
    model = ModelConfig(name=str(peaked_model))
    GRPO = {**globals()["GRPO"], "method": "lora"}
    train(TrainConfig.model_validate({**GRPO, "max_steps": 6}), model, data_dir, tmp_path / "a", criteria=criteria)
    train(TrainConfig.model_validate({**GRPO, "max_steps": 3, "save_every": 3}), model, data_dir, tmp_path / "b", criteria=criteria)
    train(TrainConfig.model_validate({**GRPO, "max_steps": 6, "save_every": 3}), model, data_dir, tmp_path / "b", resume=True, criteria=criteria)
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for name, t in a.items() if "lora_B" in name)  # it trained
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_a_grader_that_raises_or_hangs_scores_zero_and_the_run_goes_on(tmp_path, data_dir, tiny_model_dir):
    grader = tmp_path / "grader.py"
    grader.write_text("import time\n"
                      "def grade(sample, item):\n"
                      "    text = sample['output_text']\n"
                      "    if len(text) % 3 == 0: raise ValueError('no')\n"
                      "    if len(text) % 3 == 1: return 'not a number'\n"
                      "    return 1.0\n")
    criteria = ObjectiveConfig.model_validate({"reward": {"type": "python", "name": "flaky", "file": str(grader), "timeout_s": 5}})
    cfg = TrainConfig.model_validate({**GRPO, "method": "lora", "max_steps": 2, "grpo": {**GRPO["grpo"], "group_size": 4, "max_new_tokens": 4}})
    train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run", criteria=criteria)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grader_errors"] > 0 for r in records)
    assert all(math.isfinite(r["train_loss"]) for r in records)


def test_the_gates_are_the_default_reward(data_dir, tokenizer, tmp_path):
    (data_dir / "manifest.json").write_text(json.dumps({"stage": "data", "task": TaskConfig(
        output_schema={"type": "object", "required": ["category"]}, label_fields=["category"]).model_dump(mode="json")}))
    gates = ObjectiveConfig.model_validate({"gates": {"json_valid": ">= 0.9", "category_accuracy": ">= 0.8"}})
    objective = Grpo(tokenizer, data_dir, TrainConfig.model_validate(GRPO), gates)
    reference = objective.train_set[0].item["reference"]
    grades = objective.grader.grade([reference, "not json"], [objective.train_set[0].item] * 2)
    assert grades.total == [1.0, 0.0]


def test_decoding_with_merged_adapters_answers_the_same_and_leaves_the_base_bit_for_bit(tiny_model_dir, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneloop.train.rollout import MergedForDecoding, answer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prompts = [tokenizer("Hello there, how are you?")["input_ids"], tokenizer("Ticket 3: refund")["input_ids"]]
    plain = answer(model, tokenizer, prompts, greedy=True, max_new_tokens=8)
    merged = MergedForDecoding(model)
    assert merged.saved  # every adapted layer
    with merged():
        folded = answer(model, tokenizer, prompts, greedy=True, max_new_tokens=8)
    assert [a[0].ids for a in folded] == [a[0].ids for a in plain]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_group_shares_its_prompt_s_prefill_and_answers_as_separate_copies_would(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from tuneloop.train import rollout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [tokenizer("Hello there, how are you?")["input_ids"], tokenizer("Ticket 3: refund")["input_ids"]]  # left-padded apart
    shared = rollout.answer(model, tokenizer, prompts, samples=3, greedy=True, max_new_tokens=8)
    copies = rollout.answer(model, tokenizer, [p for p in prompts for _ in range(3)], greedy=True, max_new_tokens=8)
    assert [a.ids for group in shared for a in group] == [a[0].ids for a in copies]
    calls = []
    prefill = rollout.shared_prefill
    rollout.shared_prefill = lambda *args: calls.append(args[1].shape) or prefill(*args)
    try:
        torch.manual_seed(0)
        sampled = rollout.answer(model, tokenizer, prompts, samples=4, temperature=1.0, max_new_tokens=6)
    finally:
        rollout.shared_prefill = prefill
    assert calls == [(2, max(map(len, prompts)))] and [len(g) for g in sampled] == [4, 4]  # one prefill per prompt


def test_with_iterations_one_rollout_serves_several_updates_and_the_clip_bites(data_dir, peaked_model, tokenizer):
    cfg = TrainConfig.model_validate({**GRPO, "grpo": {**GRPO["grpo"], "iterations": 3}})
    objective = Grpo(tokenizer, data_dir, cfg, ObjectiveConfig.model_validate(BLANK))
    where = placement(cfg)
    model = build_model(ModelConfig(name=str(peaked_model)), cfg, where)
    objective.attach(model)
    sampled = []
    rollout = objective._rollout
    objective._rollout = lambda *args: sampled.append(1) or rollout(*args)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    groups = [[objective.collate(b)] for b in objective.batches(0)]
    # the first micro-batch whose groups disagree (a group that all scored the same teaches nothing)
    first = next(g for g in groups if objective.step(model, g, World(), where)["reward_std"] > 0)
    model.zero_grad()
    objective.kept = None  # start the cycle afresh
    sampled.clear()
    stats = []
    for group in (first, first, first, groups[-1]):
        stats.append(objective.step(model, group, World(), where))
        optimizer.step()
        optimizer.zero_grad()
    assert len(sampled) == 1 + 1  # the same prompts again within the cycle: graded once; other prompts: sampled
    assert stats[0]["reward"] == stats[1]["reward"] == stats[2]["reward"] and stats[0]["reward_std"] > 0
    assert stats[0]["clip_fraction"] == 0.0 and stats[0]["train_loss"] == pytest.approx(0.0, abs=1e-6)
    # the updates moved the policy: on the reused answers the ratio to the sampling policy leaves [1-eps, 1+eps]
    assert stats[2]["clip_fraction"] > 0.0 and stats[2]["kl"] > 0.0
    assert stats[3]["clip_fraction"] == 0.0  # fresh answers: the first update on them has ratio 1
    for _ in range(3):  # uses 2 and 3 of that rollout, then a 4th step on the same prompts
        objective.step(model, groups[-1], World(), where)
    assert len(sampled) == 3  # at most `iterations` updates per rollout, even for the same prompts


def test_each_group_of_micro_batches_serves_steps_per_group_steps_and_a_resume_draws_its_cycle_again():
    from tuneloop.train.trainer import _step_groups

    class Counting:
        steps_per_group = 2

        def batches(self, epoch):
            return [[epoch * 10 + i] for i in range(10)]

        def collate(self, examples):
            return examples[0]

    def first(done, n):
        groups = _step_groups(Counting(), 2, done, World())
        return [next(groups) for _ in range(n)]

    assert first(0, 6) == [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]
    assert first(3, 3) == [[2, 3], [4, 5], [4, 5]]  # step 4 finishes the cycle step 3 began
    assert first(4, 2) == [[4, 5], [4, 5]]
