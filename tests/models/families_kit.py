"""Tiny random models of every family tuneloop supports, each with a tokenizer that speaks its family's chat
template: the embedded SmolLM2 vocabulary plus the family's special tokens, and the family's own template
(the published ones, cut to the system/user/assistant parts tuneloop uses). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Mistral v0.3: the system message goes into the *last* user turn, so it moves as a conversation grows.
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}"
    "{%- for message in loop_messages %}{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}{%- endif %}{%- endfor %}"
)
CHATML = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Gemma 2 refuses a system role.
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
GEMMA3 = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
)
# Phi-3 ends a finished conversation with its end-of-sequence token, after the last turn's <|end|>.
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Kit:
    model_type: str
    template: str
    specials: dict  # bos/eos/pad token text (None: keep the vocabulary's)
    added: tuple[str, ...]  # extra special tokens the template uses
    end_of_turn: str  # what the template closes an answer with
    config: dict  # arguments of the family's transformers config beside the shared small sizes
    fold_system: bool = False


SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=1024)
# Gemma scales attention by 1/sqrt(query_pre_attn_scalar), which its published models keep equal to head_dim (as
# llama.cpp assumes); the config's default of 256 would not be, at this head size.
_GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 16}
_MOE = dict(num_experts_per_tok=2, router_aux_loss_coef=0.02)
KITS = {
    "llama": Kit("llama", LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"},
                 ("<|start_header_id|>", "<|end_header_id|>"), "<|eot_id|>", {"tie_word_embeddings": True}),
    "mistral": Kit("mistral", MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"}, ("[INST]", "[/INST]"), "</s>",
                   {"sliding_window": None}, fold_system=True),
    "qwen2": Kit("qwen2", CHATML, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, (), "<|im_end|>", {}),
    "qwen3": Kit("qwen3", CHATML, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, (), "<|im_end|>", {"head_dim": 16}),
    "gemma2": Kit("gemma2", GEMMA2, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
                  ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>", _GEMMA, fold_system=True),
    "gemma3_text": Kit("gemma3_text", GEMMA3, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
                       ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>", _GEMMA),
    "phi3": Kit("phi3", PHI3, {"eos_token": "<|endoftext|>"}, ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"), "<|end|>", {}),
    "mixtral": Kit("mixtral", MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"}, ("[INST]", "[/INST]"), "</s>",
                   {"num_local_experts": 4, **_MOE}, fold_system=True),
    "qwen2_moe": Kit("qwen2_moe", CHATML, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, (), "<|im_end|>",
                     {"num_experts": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64, **_MOE}),
    "qwen3_moe": Kit("qwen3_moe", CHATML, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, (), "<|im_end|>",
                     {"num_experts": 4, "moe_intermediate_size": 32, "head_dim": 16, **_MOE}),
}


def make_family_model(path: Path, kit: Kit, base_tokenizer_dir: Path) -> Path:
    """A 2-layer random model of `kit`'s family with its tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_tokenizer_dir)
    new = [t for t in (*kit.added, *(v for v in kit.specials.values() if v)) if t not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    for key, value in kit.specials.items():
        setattr(tokenizer, key, value)
    tokenizer.chat_template = kit.template
    ids = {f"{key[:-6]}_token_id": tokenizer.convert_tokens_to_ids(getattr(tokenizer, key)) for key in ("bos_token", "eos_token", "pad_token")
           if getattr(tokenizer, key) is not None}
    config = AutoConfig.for_model(kit.model_type, vocab_size=len(tokenizer), **{**SMALL, **ids, **kit.config})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Pieces learned from this text: enough for the tests' prompts to be mostly whole words, with the rest in bytes.
_PIECE_TEXT = (
    "You are a helpful assistant. What is the capital of France? Write a haiku about the sea. My parcel never arrived, "
    "what now? Order 4521 never arrived: 3 boxes, 12.5 kg. Reply with JSON: the category and the priority of the "
    "ticket. shipping billing account technical refund high low medium user assistant system model"
)


# family -> (bos, eos, space prefix) of a SentencePiece vocabulary, as the family's published tokenizers have it.
SENTENCEPIECE = {"gemma2": ("<bos>", "<eos>", False), "gemma3_text": ("<bos>", "<eos>", False), "phi3": ("<s>", "</s>", True)}


def make_sentencepiece_tokenizer(path: Path, bos: str, eos: str, space_prefix: bool) -> Path:
    """A SentencePiece-style tokenizer as transformers saves Gemma's, Phi-3's and Llama 2's: a BPE with byte fallback
    over `▁`-marked words, ids in SentencePiece's order (specials, the 256 byte pieces, then pieces by score), and
    merges made from every pair of pieces whose join is a piece, ranked by that piece, as transformers' converter
    makes them. `space_prefix`: a `▁` before the first word (Llama 2, Phi-3), else none (Gemma)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    learner.train_from_iterator([_PIECE_TEXT] * 4 + list(WORDS_TEXT), trainers.BpeTrainer(vocab_size=400, show_progress=False))
    learned = sorted(learner.get_vocab().items(), key=lambda item: item[1])
    specials = ["<pad>", eos, bos, "<unk>"]
    pieces = specials + [f"<0x{byte:02X}>" for byte in range(256)] + [piece for piece, _ in learned]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    merges = sorted(
        ((piece[:cut], piece[cut:]) for piece in pieces[len(specials) + 256:] for cut in range(1, len(piece))
         if piece[:cut] in vocab and piece[cut:] in vocab),
        key=lambda pair: (vocab[pair[0] + pair[1]], vocab[pair[0]], vocab[pair[1]]),
    )
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if space_prefix:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    else:
        tokenizer.normalizer = normalizers.Replace(" ", "▁")
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if space_prefix else []))
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token="<unk>", pad_token="<pad>")
    wrapped.save_pretrained(path)
    return path


WORDS_TEXT = [_PIECE_TEXT.lower(), _PIECE_TEXT.upper()]
