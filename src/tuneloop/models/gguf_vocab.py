"""The tokenizer part of a GGUF file, in the two forms llama.cpp reads: byte-level BPE (`gpt2`: SmolLM2, Llama 3,
Qwen, GPT-2) and SentencePiece (`llama`: Gemma 2/3, Phi-3, Llama 2, Mistral v0.1-v0.3).

A SentencePiece vocabulary is read from the model folder's `tokenizer.json`, the form transformers saves it in (a
BPE with byte fallback over `▁`-marked words, whose merges transformers derived from the SentencePiece scores), so
no `tokenizer.model` or sentencepiece package is needed. llama.cpp's SentencePiece tokenizer merges by token score,
highest first; each token's score is minus the rank of the first merge that makes it, which picks the same merges
in the same order.
"""

from __future__ import annotations

import json
import re
from hashlib import sha256
from pathlib import Path

import gguf

from tuneloop.errors import TuneloopError

# llama.cpp splits text before BPE with a regex it chooses by `tokenizer.ggml.pre`, and refuses a name it
# does not know. Its converter finds the name by hashing the ids of this exact text; same text, same hashes.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    from transformers import AutoTokenizer  # heavy: imported only when exporting

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    sentencepiece = spec["model"]["type"] == "BPE" and spec["model"].get("byte_fallback", False)
    if sentencepiece:
        tokens, scores, token_types = _sentencepiece_vocabulary(tokenizer, spec["model"], vocab_size)
        writer.add_tokenizer_model("llama")  # llama.cpp's name for SentencePiece
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(token_types)
        # Llama 2 / Phi-3 put `▁` before the first word; Gemma does not.
        first = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"][:1])
        writer.add_add_space_prefix(bool(first) and first[0].startswith("▁"))
    else:
        tokens, token_types = _bpe_vocabulary(tokenizer, vocab_size)
        writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
        writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer))
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
    # Merges (BPE), bos/eos/unk/pad ids and the chat template (tokenizer_config.json or chat_template.jinja).
    special = gguf.SpecialVocab(model_dir, load_merges=not sentencepiece, n_vocab=vocab_size)
    # Say whether to prepend BOS as this tokenizer does: llama.cpp's default for a vocabulary type may differ.
    special.add_special_token.setdefault("bos", adds_bos(tokenizer))
    special.add_to_gguf(writer, quiet=True)


def adds_bos(tokenizer) -> bool:
    return tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def _pre_tokenizer_name(tokenizer) -> str:
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS and type(tokenizer).__name__ == "Qwen2Tokenizer":
        return "qwen2"  # transformers builds Qwen2's split regex into the class itself, whatever the vocabulary
    if digest not in _PRE_TOKENIZERS:
        raise TuneloopError(
            "GGUF export: the tokenizer is not one llama.cpp can split text for here (supported: SentencePiece "
            "vocabularies, and the byte-level BPE tokenizers of SmolLM/SmolLM2, Llama 3, Qwen2/2.5/3 and GPT-2)"
        )
    return _PRE_TOKENIZERS[digest]


def _by_id(tokenizer, vocab_size: int) -> dict[int, str]:
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise TuneloopError(f"GGUF export: tokenizer ids reach {max(by_id)}, past the model's vocab_size {vocab_size}")
    return by_id


def _bpe_vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and types for every id below the model's vocab_size, as llama.cpp's converter lists them."""
    by_id = _by_id(tokenizer, vocab_size)
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:  # embeddings padded past the tokenizer: placeholders keep the ids aligned
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if _control(added[index], token) else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _sentencepiece_vocabulary(tokenizer, model: dict, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types, as llama.cpp's converter reads them from a tokenizer.model."""
    by_id = _by_id(tokenizer, vocab_size)
    added = tokenizer.added_tokens_decoder
    rank: dict[str, int] = {}
    for index, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, index)
    tokens, scores, types = [], [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            scores.append(-10000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if index in added and token != model.get("unk_token"):
            scores.append(-1000.0)
            types.append(gguf.TokenType.CONTROL if _control(added[index], token) else gguf.TokenType.USER_DEFINED)
        else:
            scores.append(-float(rank[token] + 1) if token in rank else 0.0)
            types.append(gguf.TokenType.UNKNOWN if token == model.get("unk_token")
                         else gguf.TokenType.BYTE if _BYTE_TOKEN.fullmatch(token) else gguf.TokenType.NORMAL)
    return tokens, scores, types


def _control(added_token, token: str) -> bool:
    # Control tokens are never produced from plain text; `<|...|>` ones count even when not marked special.
    return added_token.special or (token.startswith("<|") and token.endswith("|>"))
