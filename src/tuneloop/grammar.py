"""Constrained decoding: a JSON Schema or the declared tools turned into a per-token mask, so that what a model
writes always parses (structured outputs, tool calls). Shared by serving (inside continuous batching, each
request its own matcher) and evaluation (the `constrained` system, through transformers' generate).

Built on llguidance: its matchers are Rust, compute a mask in tens of microseconds on a CPU (the vocabulary
trie is walked lazily, not token by token in Python), fill a whole batch's masks in parallel, compile JSON
Schema and Lark grammars (JSON Schema inside Lark, which tool calls need; lazy triggers, which `tool_choice:
auto` needs), and name what they cannot compile. It has no dependencies, and vLLM ships it as its `guidance`
backend, so the same grammar text constrains both engines. (xgrammar pulls triton and a TVM runtime;
outlines-core has no parallel batch path and no lazy triggers.)

Every grammar here is Lark text; JSON inside it is laid out as json.dumps writes it (", " and ": ", no
other whitespace): the layout fine-tuning data has, so a fine-tuned model is asked for exactly what it learnt.
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from typing import Any

import torch

from tuneloop.errors import TuneloopError
from tuneloop.models.tools import CLOSE, OPEN

LAYOUT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
_SHIFTS = torch.arange(32, dtype=torch.int32)
# llguidance's view of each tokenizer, per vocabulary width (engines pad the model's vocabulary past it).
_TABLES: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class GrammarError(TuneloopError):
    """A schema or grammar the constraint library cannot compile (the message names the construct)."""


def json_grammar(schema: dict[str, Any] | None) -> str:
    """JSON values valid under `schema` (None: any JSON object)."""
    return f"%llguidance {{}}\nstart: {_json(schema)}\n"


def tool_grammar(functions: list[dict], required: bool, parallel: bool) -> str:
    """Calls to `functions` in the models/tools.py format, each with arguments valid under its `parameters`.

    required: the answer is calls only (one, or with `parallel` one or more on separate lines);
    otherwise (tool_choice auto) the model writes free text, and once it opens a <tool_call> the call must be
    valid: the trigger is lazy, so text that never calls a tool is not constrained."""
    heads = [(f["name"], _begin(f["name"]), f.get("parameters")) for f in functions]
    if required:
        calls = " | ".join(f"call_{i}" for i in range(len(heads)))
        rules = "\n".join(f"call_{i}: {json.dumps(begin)} {_json(params)} {json.dumps('}' + CLOSE)}" for i, (_, begin, params) in enumerate(heads))
        start = f'start: call ("\\n" call)*\ncall: {calls}' if parallel else f"start: {calls}"
        return f"%llguidance {{}}\n{start}\n{rules}\n"
    import llguidance

    trigger = OPEN.split(">")[0]  # "<tool_call": a literal, not a special token
    tags = [llguidance.StructTag(trigger=trigger, begin=begin, grammar=json.dumps(_with_layout(params)), end="}" + CLOSE)
            for _, begin, params in heads]
    return llguidance.StructTag.to_grammar(tags)


class Constraint:
    """One request's matcher: the mask for its next token, and the tokens it has taken."""

    def __init__(self, tokenizer, grammar: str, vocab_size: int):
        import llguidance

        self.vocab_size = vocab_size
        self.matcher = llguidance.LLMatcher(_table(tokenizer, vocab_size), grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(_short(self.matcher.get_error()))
        # A grammar can compile and still admit nothing (a schema that only refers to itself): find out now.
        from llguidance.torch import fill_next_token_bitmask

        first = torch.zeros((1, (vocab_size + 31) // 32), dtype=torch.int32)
        fill_next_token_bitmask(self.matcher, first, 0)
        if self.matcher.is_error() or not bool(first.any()):
            raise GrammarError(f"no value satisfies it ({_short(self.matcher.get_error()) or 'nothing can be written first'})")

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more (only the end of the answer remains)."""
        return self.matcher.is_stopped()

    def take(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} breaks the grammar: {_short(self.matcher.get_error())}")


def restrict(constraints: list[Constraint | None], logits: torch.Tensor, end_ids: list[int]) -> dict[int, Exception]:
    """Set, in place, the logits of the tokens each row's grammar refuses to -inf (rows without a constraint are
    left alone; a finished grammar allows only `end_ids`). The masks are filled in parallel. Returns the rows
    whose matcher failed, with why: those requests fail, the others carry on."""
    failed: dict[int, Exception] = {row: GrammarError(_short(c.matcher.get_error()))
                                    for row, c in enumerate(constraints) if c is not None and c.matcher.is_error()}
    rows = [(c.matcher, row) for row, c in enumerate(constraints) if c is not None and row not in failed and not c.done]
    if rows:
        from llguidance.torch import fill_next_token_bitmask_par

        words = (constraints[rows[0][1]].vocab_size + 31) // 32
        masks = torch.full((len(constraints), words), -1, dtype=torch.int32)
        fill_next_token_bitmask_par(_executor(), rows, masks)
        keep = ((masks.unsqueeze(-1) >> _SHIFTS) & 1).bool().view(len(constraints), -1)
        vocab = min(keep.shape[1], logits.shape[1])
        for matcher, row in rows:
            if matcher.is_error():
                failed[row] = GrammarError(_short(matcher.get_error()))
                continue
            logits[row, :vocab].masked_fill_(~keep[row, :vocab].to(logits.device), float("-inf"))
            logits[row, constraints[row].vocab_size:] = float("-inf")
    for row, constraint in enumerate(constraints):
        if constraint is not None and row not in failed and constraint.done:
            ends = logits[row, end_ids].clone()
            logits[row] = float("-inf")
            logits[row, end_ids] = ends
    return failed


class ConstrainedLogits:
    """A transformers LogitsProcessor that constrains each row of a batched `generate` with its own Constraint
    (None: that row is free). The first call sees the prompts; each later one consumes the token just chosen."""

    def __init__(self, constraints: list[Constraint | None], prompt_length: int, end_ids: list[int]):
        self.constraints, self.prompt_length, self.end_ids = constraints, prompt_length, end_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.prompt_length:
            for row, constraint in enumerate(self.constraints):
                token = int(input_ids[row, -1])
                if constraint is None:
                    continue
                if token in self.end_ids:  # the row has ended; generate pads it from here on
                    self.constraints[row] = None
                elif not constraint.done:
                    constraint.take(token)
        failed = restrict(self.constraints, scores, self.end_ids)
        for row in failed:  # that row's grammar broke: let it end
            self.constraints[row] = None
            scores[row] = float("-inf")
            scores[row, self.end_ids] = 0.0
        return scores


def _json(schema: dict[str, Any] | None) -> str:
    return "%json " + json.dumps(_with_layout(schema))  # ASCII: no character of the schema can end the line


def _with_layout(schema: dict[str, Any] | None) -> dict[str, Any]:
    schema = {"type": "object"} if schema is None else schema
    return {**schema, "x-guidance": LAYOUT}


def _begin(name: str) -> str:
    return OPEN + '{"name": ' + json.dumps(name) + ', "arguments": '


def _short(message: str) -> str:
    """llguidance's error without its parser-state dump."""
    return message.split("\n<state>")[0].strip()


@functools.lru_cache(maxsize=1)
def _executor():
    import llguidance

    return llguidance.LLExecutor()


def _table(tokenizer, vocab_size: int):
    """llguidance's view of a tokenizer (about half a second to build, so once per tokenizer)."""
    import llguidance.hf

    with _LOCK:
        tables = _TABLES.setdefault(tokenizer, {})
        if vocab_size not in tables:
            from tuneloop.models.chat import stop_ids

            tables[vocab_size] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_ids(tokenizer))
        return tables[vocab_size]
