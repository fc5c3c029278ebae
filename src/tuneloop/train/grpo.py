"""Group-relative policy optimisation (GRPO; Shao et al. 2024, DeepSeekMath) with the task's own graders as reward.

Each optimizer step samples `group_size` answers per prompt from the current policy (rollout.py), scores
them with the reward grader (`objective.reward`, by default the objective's gates: graders/), and takes
each answer's advantage relative to its group: (reward - group mean) / group std. The loss per answer
token is the clipped policy-gradient term plus `beta` times the k3 estimate of KL(policy || reference):

    ratio = exp(logp - logp_old)
    loss  = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * (exp(ref - logp) - (ref - logp) - 1)

averaged over every answer token of the step (all micro-batches, all ranks), so long answers weigh by
their tokens and accumulation does not change the step. By default a rollout serves one update, so logp_old
is logp detached (ratio 1 in value, the policy gradient in its derivative), as in TRL's default; with
`grpo.iterations` = mu > 1 the trainer hands the same prompts to mu consecutive steps, the first samples and
grades them, and the later ones reuse those answers with logp_old (and the reference's log-probabilities)
kept from the first, so the ratio moves away from 1 and the clip bites. A run resumed inside such a cycle
samples that cycle's prompts afresh. Log-probabilities are those of the sampling distribution
(logits / temperature), as TRL takes them. The
reference is the starting model: adapters switched off, or a frozen copy for full fine-tuning; with
LoRA at step 0 the policy *is* the reference and the KL term is exactly zero.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel

from tuneloop.config import ObjectiveConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.build import build_grader, reward_spec
from tuneloop.layout import DataDir
from tuneloop.models.chat import IGNORE, Encoded
from tuneloop.train.batching import batches, collate, to_device
from tuneloop.train.loss import answer_token_logps
from tuneloop.train.prompts import Prompt, read_prompts, task_of
from tuneloop.train.rollout import MergedForDecoding, answer
from tuneloop.ui import console

ERRORS_SHOWN = 3  # grader error messages printed per run; all are counted in the metrics


class Grpo:
    def __init__(self, tokenizer, data_dir: Path, cfg: TrainConfig, criteria: ObjectiveConfig | None = None):
        self.cfg, self.g = cfg, cfg.grpo
        self.tokenizer = tokenizer
        task = task_of(data_dir)
        self.grader = build_grader(reward_spec(criteria or ObjectiveConfig(), task), task)
        budget = cfg.max_seq_len - self.g.max_new_tokens
        if budget < 1:
            raise TuneloopError(f"train.grpo.max_new_tokens={self.g.max_new_tokens} leaves no room for a prompt "
                                f"within train.max_seq_len={cfg.max_seq_len}; raise max_seq_len")
        every = read_prompts(tokenizer, DataDir(data_dir).train)
        self.train_set = [p for p in every if len(p.ids) <= budget]
        self.truncated = 0
        self.too_long = len(every) - len(self.train_set)
        if self.too_long:
            console.print(f"[yellow]warning:[/] {self.too_long} prompt(s) longer than max_seq_len - grpo.max_new_tokens = {budget} tokens are left out")
        if not self.train_set:
            raise TuneloopError(f"{DataDir(data_dir).train}: no prompts of at most {budget} tokens to sample answers for")
        val = DataDir(data_dir).val
        self.val_set = [p for p in read_prompts(tokenizer, val) if len(p.ids) <= budget][: cfg.val_answers] if val.is_file() else []
        self.frozen = None
        self.merged = None  # set in attach: adapters folded into the base while sampling
        self.errors_shown = 0
        self.kept: tuple[tuple[int, ...], list[Rollout]] | None = None  # the rollout later iterations reuse
        self.uses = 0  # updates the kept rollout has served

    @property
    def rows_per_example(self) -> int:
        return self.g.group_size  # every prompt brings its group of answers into the forward pass

    @property
    def steps_per_group(self) -> int:
        return self.g.iterations

    def attach(self, model) -> None:
        """Full fine-tuning has no adapters to switch off: keep a frozen copy of the starting model as the reference."""
        if self.g.beta and not isinstance(model, PeftModel):
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)
        self.merged = MergedForDecoding(model)

    def stats(self) -> dict:
        longest = max(len(p.ids) for p in self.train_set) + self.g.max_new_tokens
        return {"examples": len(self.train_set), "longest": longest, "longest_target": self.g.max_new_tokens,
                "tokens": sum(len(p.ids) + self.g.max_new_tokens for p in self.train_set) * self.g.group_size}

    def batches(self, epoch: int) -> list:
        lengths = [len(p.ids) for p in self.train_set]
        return [[self.train_set[i] for i in b] for b in batches(lengths, self.cfg.batch_size, self.cfg.seed + epoch, self.cfg.group_by_length)]

    def collate(self, prompts: list[Prompt]) -> dict:
        return {"prompts": prompts}  # the tensors come from the rollout, in step()

    def step(self, model, group: list[dict], world, where) -> dict:
        """Sample and grade every micro-batch's groups with the current weights (or reuse the answers the same
        prompts got at the previous step, within grpo.iterations), then forward/backward each."""
        key = tuple(id(p) for batch in group for p in batch["prompts"])
        if self.kept is not None and self.kept[0] == key and self.uses < self.g.iterations:
            rollouts = self.kept[1]
        else:
            rollouts = [self._rollout(model, batch["prompts"], where) for batch in group]
            self.kept, self.uses = ((key, rollouts) if self.g.iterations > 1 else None), 0
        self.uses += 1
        n_tokens = world.sum(sum(r.tokens for r in rollouts), where.device)
        totals: dict[str, float] = {}
        for rollout in rollouts:
            loss_sum, sums = self._loss(model, rollout, where)
            (loss_sum / n_tokens).backward()
            for key, value in {"train_loss": loss_sum.item(), **sums}.items():
                totals[key] = totals.get(key, 0.0) + value
        answers = world.sum(sum(len(r.rewards) for r in rollouts), where.device)
        groups = world.sum(sum(len(r.rewards) // self.g.group_size for r in rollouts), where.device)
        per_token = {k: world.sum(totals[k], where.device) / n_tokens for k in ("train_loss", "kl", "clip_fraction")}
        per_answer = {k: world.sum(sum(r.sums[k] for r in rollouts), where.device) / answers for k in rollouts[0].sums}
        seen = world.sum(sum(r.seen for r in rollouts), where.device)
        return {**per_token, **per_answer, "completion_length": n_tokens / answers,
                "reward_std": world.sum(sum(r.spread for r in rollouts), where.device) / groups, "tokens": seen}

    @torch.no_grad()
    def validate(self, model, world, where) -> dict:
        """Mean reward (and each grader's) of greedy answers to the validation prompts."""
        mine = self.val_set[world.rank :: world.size]
        sums: dict[str, float] = {}
        length = 0
        width = self.cfg.batch_size * self.g.group_size
        for start in range(0, len(mine), width):
            chunk = mine[start : start + width]
            with where.autocast(), self.merged():
                outs = [a[0] for a in answer(model, self.tokenizer, [p.ids for p in chunk], greedy=True, max_new_tokens=self.g.max_new_tokens)]
            grades = self._grade([o.text for o in outs], [p.item for p in chunk])
            for key, value in _reward_sums(grades).items():
                sums[key] = sums.get(key, 0.0) + value
            length += sum(len(o.ids) for o in outs)
        n = max(world.sum(len(mine), where.device), 1)
        keys = sorted(sums) if sums else ["reward"]
        return {**{f"val_{k}": world.sum(sums.get(k, 0.0), where.device) / n for k in keys},
                "val_completion_length": world.sum(length, where.device) / n}

    # --- one micro-batch -------------------------------------------------------------------------

    def _rollout(self, model, prompts: list[Prompt], where) -> "Rollout":
        G = self.g.group_size
        with where.autocast(), self.merged():
            sampled = answer(model, self.tokenizer, [p.ids for p in prompts], samples=G, temperature=self.g.temperature,
                             top_p=self.g.top_p, max_new_tokens=self.g.max_new_tokens)
        outs = [a for group in sampled for a in group]
        grades = self._grade([a.text for a in outs], [p.item for p in prompts for _ in range(G)])
        rewards = torch.tensor(grades.total, dtype=torch.float32).view(len(prompts), G)
        advantages = group_advantages(rewards, self.g.scale_rewards).flatten()
        examples = [Encoded(p.ids + a.ids, [IGNORE] * len(p.ids) + a.ids) for p, group in zip(prompts, sampled) for a in group]
        batch = collate(examples, self.tokenizer.pad_token_id)
        return Rollout(batch=batch, advantages=advantages, rewards=grades.total, tokens=sum(len(a.ids) for a in outs),
                       seen=sum(len(e.input_ids) for e in examples), sums=_reward_sums(grades),
                       spread=float(rewards.std(dim=1).sum()) if G > 1 else 0.0)

    def _loss(self, model, rollout: "Rollout", where) -> tuple[torch.Tensor, dict]:
        batch = to_device(rollout.batch, where.device)
        with where.autocast():
            logps, rows = answer_token_logps(model, batch, self.cfg.fast_kernels, self.g.temperature)
            if rollout.old is None:  # the first update on these answers: the policy that sampled them
                rollout.old = logps.detach()
            if self.g.beta and rollout.reference is None:  # the reference never changes: once per rollout
                with torch.no_grad():
                    reference_model = self.frozen if self.frozen is not None else model
                    with model.disable_adapter() if self.frozen is None else nullcontext():
                        rollout.reference, _ = answer_token_logps(reference_model, batch, self.cfg.fast_kernels, self.g.temperature)
        advantages = rollout.advantages.to(logps.device)[rows]
        loss, terms = grpo_token_loss(logps, rollout.old, rollout.reference, advantages, self.g.epsilon, self.g.beta)
        return loss.sum(), {"kl": float(terms["kl"].sum()), "clip_fraction": float(terms["clipped"].sum())}

    def _grade(self, outputs: list[str], items: list[dict]):
        grades = self.grader.grade(outputs, items)
        for message in grades.messages[: max(ERRORS_SHOWN - self.errors_shown, 0)]:
            console.print(f"[yellow]grader error[/] (scored 0): {message}")
            self.errors_shown += 1
        return grades


@dataclass
class Rollout:
    batch: dict  # prompt + answer per row, labels on the answer tokens
    advantages: torch.Tensor  # one per answer
    rewards: list[float]
    tokens: int  # answer tokens (the loss's denominator)
    seen: int  # every real token of the forward pass
    sums: dict[str, float]  # reward sums per grader, and grader errors
    spread: float  # sum over groups of the reward's standard deviation
    old: torch.Tensor | None = None  # answer-token log-probabilities at the first update (the sampling policy)
    reference: torch.Tensor | None = None  # the reference model's, when grpo.beta > 0


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """(prompts, group) rewards -> advantages relative to each group's mean (and std: unbiased, as TRL's)."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-4) if scale else centred


def grpo_token_loss(logps: torch.Tensor, old: torch.Tensor, reference: torch.Tensor | None, advantages: torch.Tensor,
                    epsilon: float, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token GRPO loss and its parts (kl, clipped as 0/1), all of shape (tokens,)."""
    ratio = torch.exp(logps - old)
    unclipped, clipped = ratio * advantages, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantages
    loss = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logps)
    if reference is not None:
        delta = reference - logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    return loss, {"kl": kl.detach(), "clipped": (clipped < unclipped).float().detach()}


def _reward_sums(grades) -> dict[str, float]:
    sums = {"reward": float(sum(grades.total)), "grader_errors": float(sum(grades.errors.values()))}
    if len(grades.parts) > 1:
        sums |= {f"reward_{name}": float(sum(values)) for name, values in grades.parts.items()}
    return sums
