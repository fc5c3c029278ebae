"""Supervised fine-tuning objective: next-token loss on the answers (or on every token).

Conversations are encoded with the model's own chat template, the end-of-turn token included in the
labels, so the model learns to stop exactly where inference stops. The loss of a step is the sum of
token losses divided by the answer tokens of the *whole* step (all micro-batches, all ranks): that
is what makes batch 2 x accumulation 4 equal batch 8 x accumulation 1.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from tuneloop.artifacts import read_jsonl
from tuneloop.config import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import DataDir
from tuneloop.models import encode_chat
from tuneloop.models.chat import IGNORE, Encoded
from tuneloop.train.batching import batches, collate, to_device
from tuneloop.train.loss import answer_loss_sum
from tuneloop.train.packing import pack, packed_attention, supports_packing
from tuneloop.train.prompts import read_prompts, task_of
from tuneloop.train.rollout import task_scores


class Sft:
    rows_per_example = 1
    steps_per_group = 1

    def __init__(self, tokenizer, data_dir: Path, cfg: TrainConfig, criteria=None):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.train_set = _encode(tokenizer, DataDir(data_dir).train, cfg)
        val = DataDir(data_dir).val
        self.val_set = _encode(tokenizer, val, cfg) if val.is_file() else []
        if not self.train_set:
            raise TuneloopError(f"{DataDir(data_dir).train}: no training examples with answer tokens")
        self.truncated = sum(e.truncated for e in self.train_set)
        self.packed = False
        # select_by a task metric: validation also answers (greedily) and scores the first val_answers prompts
        self.scored = read_prompts(tokenizer, val)[: cfg.val_answers] if cfg.selection[0] != "val_loss" and val.is_file() else []
        self.task = task_of(data_dir)
        self.answer_tokens = min(max((e.n_target for e in self.val_set), default=1) + 16, cfg.max_seq_len)

    def attach(self, model) -> None:
        """No reference model to keep; micro-batches are packed when the config asks and the model allows."""
        longest = max(len(e.input_ids) for e in [*self.train_set, *self.val_set])
        self.packed = self.cfg.padding_free and supports_packing(model, longest)

    def stats(self) -> dict:
        return {
            "examples": len(self.train_set),
            "longest": max(len(e.input_ids) for e in self.train_set),
            "longest_target": max(e.n_target for e in self.train_set),
            "tokens": sum(len(e.input_ids) for e in self.train_set),
        }

    def batches(self, epoch: int) -> list:
        lengths = [len(e.input_ids) for e in self.train_set]
        return [[self.train_set[i] for i in b] for b in batches(lengths, self.cfg.batch_size, self.cfg.seed + epoch, self.cfg.group_by_length)]

    def collate(self, examples: list[Encoded]) -> dict:
        return pack(examples) if self.packed else collate(examples, self.pad_id)

    def _attention(self, model):
        return packed_attention(model) if self.packed else nullcontext()

    def step(self, model, group: list[dict], world, where) -> dict:
        """Forward and backward over one optimizer step's micro-batches; gradients left in place."""
        n_tokens = world.sum(sum(_targets(b) for b in group), where.device)
        loss_total = 0.0
        with self._attention(model):
            for batch in group:
                with where.autocast():
                    loss_sum, _ = answer_loss_sum(model, to_device(batch, where.device), self.cfg.fast_kernels, router_aux=True)
                (loss_sum / n_tokens).backward()
                loss_total += loss_sum.item()
        seen = world.sum(sum(_real_tokens(b) for b in group), where.device)
        return {"train_loss": world.sum(loss_total, where.device) / n_tokens, "tokens": seen}

    @torch.no_grad()
    def validate(self, model, world, where) -> dict:
        """Mean answer-token loss over the validation split (sharded across ranks, then summed)."""
        loss, tokens = 0.0, 0
        mine = self.val_set[world.rank :: world.size]
        for start in range(0, len(mine), self.cfg.batch_size):
            with where.autocast(), self._attention(model):
                loss_sum, n = answer_loss_sum(model, to_device(self.collate(mine[start : start + self.cfg.batch_size]), where.device), self.cfg.fast_kernels)
            loss, tokens = loss + loss_sum.item(), tokens + n
        record = {"val_loss": world.sum(loss, where.device) / max(world.sum(tokens, where.device), 1)}
        if self.scored:  # every rank answers all of them: corpus metrics (macro F1) do not sum over shards
            scores = task_scores(model, self.tokenizer, self.scored, self.task, batch_size=self.cfg.batch_size,
                                    max_new_tokens=self.answer_tokens, autocast=where.autocast)
            record |= {f"val_{k}": v for k, v in scores.items()}
        return record


def _encode(tokenizer, path: Path, cfg: TrainConfig) -> list[Encoded]:
    # Preference rows train on their chosen answer.
    rows = read_jsonl(path)
    conversations = [row.get("messages") or [*row["prompt"], *row["chosen"]] for row in rows]
    if cfg.assistant_turns == "last":
        conversations = [_last_answer_only(messages) for messages in conversations]
    examples = [encode_chat(tokenizer, messages, cfg.max_seq_len, row.get("tools")) for messages, row in zip(conversations, rows)]
    if cfg.loss_on == "all":  # every token is a target; the template is learned too
        examples = [Encoded(e.input_ids, list(e.input_ids), e.truncated) for e in examples]
    return [e for e in examples if e.n_target > 0]


def _last_answer_only(messages: list[dict]) -> list[dict]:
    """The conversation with every assistant turn but the final one marked not to learn from (weight 0)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return [{**m, "weight": 0} if m["role"] == "assistant" and i != last else m for i, m in enumerate(messages)]


def _real_tokens(batch: dict) -> int:
    """Tokens that are not padding (a packed batch has none)."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def _targets(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())
