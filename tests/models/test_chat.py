"""Chat encoding: labels cover exactly the assistant answers and their end-of-turn token."""

from tuneloop.models import encode_chat, render_prompt
from tuneloop.models.chat import IGNORE


def trained_text(tokenizer, encoded):
    return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE])


def test_only_the_answer_and_end_of_turn_are_trained(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": '{"a": 1}'}]
    encoded = encode_chat(tokenizer, messages, 512)
    assert trained_text(tokenizer, encoded) == '{"a": 1}<|im_end|>'
    # The untrained prefix is exactly what the model sees at inference time.
    prompt_ids = tokenizer(render_prompt(tokenizer, messages[:-1]), add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE for label in encoded.labels[: len(prompt_ids)])


def test_every_assistant_turn_is_trained(tokenizer):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "one"},
                {"role": "user", "content": "b"}, {"role": "assistant", "content": "two"}]
    assert trained_text(tokenizer, encode_chat(tokenizer, messages, 512)) == "one<|im_end|>two<|im_end|>"


def test_truncation_is_flagged(tokenizer):
    messages = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    encoded = encode_chat(tokenizer, messages, 32)
    assert encoded.truncated and len(encoded.input_ids) == 32 and encoded.n_target == 0


def test_assistant_turns_with_weight_zero_are_not_trained(tokenizer):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "one", "weight": 0},
                {"role": "user", "content": "b"}, {"role": "assistant", "content": "two"}]
    encoded = encode_chat(tokenizer, messages, 512)
    assert trained_text(tokenizer, encoded) == "two<|im_end|>"
    assert "one" in tokenizer.decode(encoded.input_ids)  # still in the context the model reads
