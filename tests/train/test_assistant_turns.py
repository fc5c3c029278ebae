"""`train.assistant_turns`: multi-turn SFT rows train on every assistant turn (default) or on the final one only."""

import pytest

from tests.conftest import write_jsonl
from tuneloop.config import TrainConfig, parse_config
from tuneloop.errors import TuneloopError
from tuneloop.models.chat import IGNORE
from tuneloop.train.sft import Sft

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say one"},
                     {"role": "assistant", "content": "one"}, {"role": "user", "content": "Say two"},
                     {"role": "assistant", "content": "two"}, {"role": "user", "content": "Say three"},
                     {"role": "assistant", "content": "three"}]}
WEIGHTED = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "skip", "weight": 0},
                         {"role": "user", "content": "b"}, {"role": "assistant", "content": "keep"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "last"}]}
PAIR = {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "earlier"}, {"role": "user", "content": "b"}],
        "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}


def encoded(tokenizer, tmp_path, turns: str):
    write_jsonl(tmp_path / "train.jsonl", [CHAT, WEIGHTED, PAIR])
    return Sft(tokenizer, tmp_path, TrainConfig(assistant_turns=turns)).train_set


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_all_trains_every_assistant_turn_except_weight_zero(tokenizer, tmp_path):
    chat, weighted, pair = encoded(tokenizer, tmp_path, "all")
    assert trained_text(tokenizer, chat) == "one<|im_end|>two<|im_end|>three<|im_end|>"
    assert trained_text(tokenizer, weighted) == "keep<|im_end|>last<|im_end|>"
    assert trained_text(tokenizer, pair) == "earlier<|im_end|>good<|im_end|>"


def test_last_trains_only_the_final_answer_and_keeps_the_rest_as_context(tokenizer, tmp_path):
    last = encoded(tokenizer, tmp_path, "last")
    every = encoded(tokenizer, tmp_path, "all")
    assert [trained_text(tokenizer, e) for e in last] == ["three<|im_end|>", "last<|im_end|>", "good<|im_end|>"]
    for short, full in zip(last, every):
        assert short.input_ids == full.input_ids  # the same tokens in the context, fewer of them trained
        assert all(label == IGNORE for label, other in zip(short.labels, full.labels) if other == IGNORE)
        assert 0 < short.n_target < full.n_target


def test_assistant_turns_is_checked_where_it_is_declared():
    assert TrainConfig().assistant_turns == "all"
    with pytest.raises(TuneloopError, match="train.assistant_turns"):
        parse_config({"train": {"assistant_turns": "first"}})
