"""Constrained decoding (tuneloop/grammar.py) on the real SmolLM2 tokenizer: what each grammar accepts and
refuses, masks for a batch filled in parallel with per-row failure isolation, and generate's logits processor."""

from __future__ import annotations

import json

import pytest
import torch

from tuneloop.grammar import Constraint, GrammarError, json_grammar, restrict, tool_grammar

CITY = {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {"city": {"enum": ["Paris", "Oslo"]}}}
FUNCTIONS = [{"name": "weather", "parameters": CITY}, {"name": "now"}]


def accepts(tokenizer, grammar: str, text: str) -> bool:
    constraint = Constraint(tokenizer, grammar, len(tokenizer))
    try:
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            constraint.take(token)
    except GrammarError:
        return False
    return constraint.matcher.is_accepting()


CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
NOW = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'


@pytest.mark.parametrize("grammar, text, ok", [
    (json_grammar(CITY), '{"city": "Paris"}', True),
    (json_grammar(CITY), '{"city":"Paris"}', False),  # the layout json.dumps writes, which training data has
    (json_grammar(CITY), '{"city": "Rome"}', False),
    (json_grammar(None), '{"any": [1, 2]}', True),
    (json_grammar(None), '[1, 2]', False),
    (tool_grammar(FUNCTIONS, required=True, parallel=False), CALL, True),
    (tool_grammar(FUNCTIONS, required=True, parallel=False), CALL + "\n" + NOW, False),
    (tool_grammar(FUNCTIONS, required=True, parallel=True), CALL + "\n" + NOW, True),
    (tool_grammar(FUNCTIONS, required=True, parallel=False), "Sure! " + CALL, False),
    (tool_grammar(FUNCTIONS, required=True, parallel=False), CALL.replace("weather", "rain"), False),
    (tool_grammar(FUNCTIONS, required=False, parallel=True), "It is sunny, no tool needed.", True),
    (tool_grammar(FUNCTIONS, required=False, parallel=True), "Let me check. " + CALL, True),
    (tool_grammar(FUNCTIONS, required=False, parallel=True), "Let me check. " + CALL.replace("Paris", "Rome"), False),
])
def test_what_grammars_accept(tokenizer, grammar, text, ok):
    assert accepts(tokenizer, grammar, text) is ok


@pytest.mark.parametrize("schema, words", [({"type": "objekt"}, "objekt"), ({"$ref": "#/nowhere"}, "nowhere"),
                                           ({"type": "string", "pattern": "(?<=a)b"}, "look-around")])
def test_a_schema_that_cannot_compile_names_the_construct(tokenizer, schema, words):
    with pytest.raises(GrammarError, match=words) as caught:
        Constraint(tokenizer, json_grammar(schema), len(tokenizer))
    assert "<state>" not in str(caught.value)


def test_restrict_masks_each_row_by_its_own_grammar_and_leaves_free_rows_alone(tokenizer):
    vocab = len(tokenizer)
    rows = [Constraint(tokenizer, json_grammar(CITY), vocab), None, Constraint(tokenizer, tool_grammar(FUNCTIONS, True, False), vocab)]
    logits = torch.zeros(3, vocab + 64)  # models pad their vocabulary past the tokenizer's
    assert restrict(rows, logits, [tokenizer.eos_token_id]) == {}
    allowed = [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in logits]
    assert all(tokenizer.decode([t]).startswith(("{", " {", "{\"")) or "{".startswith(tokenizer.decode([t])) for t in allowed[0])
    assert len(allowed[1]) == vocab + 64 and not any(t >= vocab for t in allowed[0] | allowed[2])
    assert all("<tool_call>\n".startswith(tokenizer.decode([t])) for t in allowed[2])


def test_a_broken_row_is_reported_not_raised(tokenizer):
    constraint = Constraint(tokenizer, json_grammar(CITY), len(tokenizer))
    with pytest.raises(GrammarError):
        constraint.take(tokenizer.convert_tokens_to_ids("hello"))
    failed = restrict([None, constraint], torch.zeros(2, len(tokenizer)), [tokenizer.eos_token_id])
    assert list(failed) == [1]


def test_a_finished_grammar_allows_only_the_end(tokenizer):
    constraint = Constraint(tokenizer, json_grammar(CITY), len(tokenizer))
    for token in tokenizer('{"city": "Oslo"}', add_special_tokens=False)["input_ids"]:
        constraint.take(token)
    logits = torch.zeros(1, len(tokenizer))
    restrict([constraint], logits, [tokenizer.eos_token_id])
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [tokenizer.eos_token_id]


def test_generate_with_the_logits_processor_gives_valid_json_from_a_random_model(tokenizer, tiny_model_dir):
    from tuneloop.eval.generate import generate
    from tuneloop.models import load_model, render_prompt

    model = load_model(str(tiny_model_dir))
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": f"city {i}"}]) for i in range(5)]
    grammars = [json_grammar(CITY)] * 4 + [None]
    answers = generate(model, tokenizer, prompts, 24, batch_size=5, grammars=grammars)
    assert all(json.loads(a)["city"] in {"Paris", "Oslo"} for a in answers[:4])
