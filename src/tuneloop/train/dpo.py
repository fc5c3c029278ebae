"""Direct preference optimisation (Rafailov et al. 2023) on chosen/rejected pairs.

The reference model is the frozen base: for adapter methods the same model with its adapters
switched off (no second copy in memory); for full fine-tuning a frozen copy made before training.
Per pair, the implicit reward of an answer is beta * (log p_policy - log p_reference) summed over
its tokens; the loss is -log sigmoid(reward_chosen - reward_rejected). We report the mean reward
margin and the share of pairs whose chosen answer out-scores the rejected one (reward accuracy).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import PeftModel

from tuneloop.artifacts import read_jsonl
from tuneloop.config import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import DataDir
from tuneloop.models import encode_chat
from tuneloop.models.chat import Encoded
from tuneloop.train.batching import batches, collate, to_device
from tuneloop.train.loss import answer_logps

STATS = ("train_loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward")


@dataclass
class Pair:
    chosen: Encoded
    rejected: Encoded


class Dpo:
    rows_per_example = 2  # a pair is two sequences in one forward pass
    steps_per_group = 1

    def __init__(self, tokenizer, data_dir: Path, cfg: TrainConfig, criteria=None):
        self.cfg = cfg
        self.pad_id = tokenizer.pad_token_id
        self.frozen = None  # the reference when the model has no adapters to switch off (see attach)
        self.train_set = _encode(tokenizer, DataDir(data_dir).train, cfg.max_seq_len)
        if not self.train_set:
            raise TuneloopError(f"{DataDir(data_dir).train}: no preference pairs with answer tokens within max_seq_len={cfg.max_seq_len}")
        val = DataDir(data_dir).val
        self.val_set = _encode(tokenizer, val, cfg.max_seq_len) if val.is_file() else []
        self.truncated = sum(p.chosen.truncated or p.rejected.truncated for p in self.train_set)

    def attach(self, model) -> None:
        """Full fine-tuning has no adapters to switch off: keep a frozen copy of the starting model as the reference."""
        if not isinstance(model, PeftModel):
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def stats(self) -> dict:
        sequences = [e for p in self.train_set for e in (p.chosen, p.rejected)]
        return {
            "examples": len(self.train_set),
            "longest": max(len(e.input_ids) for e in sequences),
            "longest_target": max(e.n_target for e in sequences),
            "tokens": sum(len(e.input_ids) for e in sequences),
        }

    def batches(self, epoch: int) -> list:
        lengths = [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in self.train_set]
        return [[self.train_set[i] for i in b] for b in batches(lengths, self.cfg.batch_size, self.cfg.seed + epoch, self.cfg.group_by_length)]

    def collate(self, pairs: list[Pair]) -> dict:
        """Chosen answers in the first half of the batch, rejected in the second."""
        return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad_id)

    def step(self, model, group: list[dict], world, where) -> dict:
        n_pairs = world.sum(sum(len(b["input_ids"]) // 2 for b in group), where.device)
        totals = dict.fromkeys(STATS, 0.0)
        for batch in group:
            losses, chosen, rejected = self._terms(model, to_device(batch, where.device), where)
            (losses.sum() / n_pairs).backward()
            _add(totals, losses, chosen, rejected)
        seen = world.sum(sum(int(b["attention_mask"].sum()) for b in group), where.device)
        return {**{k: world.sum(v, where.device) / n_pairs for k, v in totals.items()}, "tokens": seen}

    @torch.no_grad()
    def validate(self, model, world, where) -> dict:
        totals = dict.fromkeys(STATS, 0.0)
        mine = self.val_set[world.rank :: world.size]
        for start in range(0, len(mine), self.cfg.batch_size):
            _add(totals, *self._terms(model, to_device(self.collate(mine[start : start + self.cfg.batch_size]), where.device), where))
        n = max(world.sum(len(mine), where.device), 1)
        return {"val_" + k.removeprefix("train_"): world.sum(v, where.device) / n for k, v in totals.items()}

    def _terms(self, model, batch: dict, where) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair losses and implicit rewards of the chosen and rejected answers."""
        with where.autocast():
            policy = answer_logps(model, batch, self.cfg.fast_kernels)
            with torch.no_grad():
                reference_model = self.frozen if self.frozen is not None else model
                with model.disable_adapter() if self.frozen is None else nullcontext():
                    reference = answer_logps(reference_model, batch, self.cfg.fast_kernels)
        half = len(policy) // 2
        rewards = self.cfg.dpo.beta * (policy - reference)
        chosen, rejected = rewards[:half], rewards[half:]
        return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


def _add(totals: dict, losses: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
    totals["train_loss"] += losses.sum().item()
    totals["reward_margin"] += (chosen - rejected).sum().item()
    totals["reward_accuracy"] += (chosen > rejected).sum().item()
    totals["chosen_reward"] += chosen.sum().item()
    totals["rejected_reward"] += rejected.sum().item()


def _encode(tokenizer, path: Path, max_len: int) -> list[Pair]:
    pairs = []
    for line, row in enumerate(read_jsonl(path), 1):
        if "chosen" not in row or "rejected" not in row:
            raise TuneloopError(
                f"{path}:{line}: train.objective 'dpo' needs preference pairs (prompt/chosen/rejected), this row has "
                f"{sorted(row)}; prepare preference data (data.form 'preference') or use train.objective 'sft'"
            )
        pair = Pair(encode_chat(tokenizer, [*row["prompt"], *row["chosen"]], max_len),
                    encode_chat(tokenizer, [*row["prompt"], *row["rejected"]], max_len))
        if pair.chosen.n_target and pair.rejected.n_target:  # a pair truncated to no answer teaches nothing
            pairs.append(pair)
    return pairs
