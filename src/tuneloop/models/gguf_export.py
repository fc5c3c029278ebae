"""Export a Hugging Face model folder (Llama, Mistral, Qwen2, Qwen3) to one GGUF file that llama.cpp and ollama can run.

The folder is what `save_pretrained` writes (config.json, safetensors weights, tokenizer files), e.g. a
LoRA adapter merged into SmolLM2. The file follows llama.cpp's own converter (convert_hf_to_gguf.py,
LlamaModel / Qwen2Model / Qwen3Model): the architecture's hyperparameters, the byte-level BPE vocabulary
with merges, special token ids and chat template, and the weights under GGUF names in f32, f16 or Q8_0 (the
`gguf` library's quantizer, as the converter's --outtype q8_0). Only the `gguf` library is used, so no llama.cpp
checkout is needed; Q4_K_M / Q5_K_M are made from the f16 file by llama.cpp's `llama-quantize` when it is installed. Other families' merged folders convert with
llama.cpp's own convert_hf_to_gguf.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from hashlib import sha256
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

from tuneloop.errors import TuneloopError

# transformers class -> llama.cpp architecture. Mistral is a Llama to llama.cpp (its converter's LlamaModel).
ARCHITECTURES = {
    "LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA, "MistralForCausalLM": gguf.MODEL_ARCH.LLAMA,
    "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2, "Qwen3ForCausalLM": gguf.MODEL_ARCH.QWEN3,
}
OUTTYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
# K-quants need llama.cpp's importance-free quantizer (its C code): written from an f16 file by `llama-quantize`.
QUANTIZER_OUTTYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M"}
ALL_OUTTYPES = (*OUTTYPES, *QUANTIZER_OUTTYPES)

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
# Buffers some checkpoints save; llama.cpp recomputes them, and the name map would wrongly take them for rope_freqs.
_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq",)


def export_gguf(model_dir: Path, out_file: Path, outtype: str = "f16", bar=None) -> Path:
    """Write the model in `model_dir` as a single GGUF file at `out_file` and return that path; `bar` is a progress
    display (ui.progress) to report the tensors on."""
    model_dir, out_file = Path(model_dir), Path(out_file)
    if outtype in QUANTIZER_OUTTYPES:
        return _llama_quantize(model_dir, out_file, outtype, bar)
    if outtype not in OUTTYPES:
        raise TuneloopError(f"GGUF export: outtype '{outtype}' is not supported (use one of: {', '.join(ALL_OUTTYPES)})")
    config = _read_config(model_dir)
    arch = ARCHITECTURES[config["architectures"][0]]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end, so a failed export never leaves a truncated .gguf behind.
    partial = out_file.with_name(out_file.name + ".partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
    try:
        _add_hyperparameters(writer, config, model_dir.name, OUTTYPES[outtype])
        _add_tokenizer(writer, model_dir, config["vocab_size"])
        _add_tensors(writer, model_dir, config, outtype, arch, bar)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        writer.close()
    partial.replace(out_file)
    return out_file


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise TuneloopError(f"GGUF export: {model_dir} is not a model folder (no config.json)")
    config = json.loads(path.read_text())
    architecture = (config.get("architectures") or [config.get("model_type") or "unknown"])[0]
    if architecture not in ARCHITECTURES:
        raise TuneloopError(
            f"GGUF export writes {', '.join(ARCHITECTURES)} models; {model_dir} is {architecture}: convert its merged "
            f"folder with llama.cpp's convert_hf_to_gguf.py"
        )
    config["architectures"] = [architecture]
    return config


def _rope(config: dict) -> tuple[float, float | None]:
    """(rope base frequency, linear scaling factor or None)."""
    # transformers 5 nests rope settings under rope_parameters; 4.x keeps rope_theta and rope_scaling at top level.
    rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "linear"):
        # llama3/yarn scaling needs extra tensors and keys (rope_freqs) that this exporter does not write.
        raise TuneloopError(f"GGUF export: rope scaling '{kind}' is not supported (only default or linear rope)")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return float(theta), (float(rope["factor"]) if kind == "linear" else None)


def _add_hyperparameters(writer: gguf.GGUFWriter, config: dict, name: str, file_type: int) -> None:
    theta, linear_factor = _rope(config)
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(theta)
    if linear_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(linear_factor)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    from transformers import AutoTokenizer  # heavy: imported only when exporting

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens, token_types = _vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    # Merges, bos/eos/unk/pad ids and the chat template (tokenizer_config.json or chat_template.jinja).
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    # Say whether to prepend BOS as this tokenizer does: llama.cpp's default for a BPE vocabulary may differ.
    special.add_special_token.setdefault("bos", adds_bos(tokenizer))
    special.add_to_gguf(writer, quiet=True)


def _pre_tokenizer_name(tokenizer) -> str:
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS and type(tokenizer).__name__ == "Qwen2Tokenizer":
        return "qwen2"  # transformers builds Qwen2's split regex into the class itself, whatever the vocabulary
    if digest not in _PRE_TOKENIZERS:
        raise TuneloopError(
            "GGUF export: the tokenizer is not one llama.cpp can split text for here "
            "(supported: the byte-level BPE tokenizers of SmolLM/SmolLM2, Llama 3, Qwen2/2.5/3 and GPT-2)"
        )
    return _PRE_TOKENIZERS[digest]


def _vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and types for every id below the model's vocab_size, as llama.cpp's converter lists them."""
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise TuneloopError(f"GGUF export: tokenizer ids reach {max(by_id)}, past the model's vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:  # embeddings padded past the tokenizer: placeholders keep the ids aligned
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            # Control tokens are never produced from plain text; `<|...|>` ones count even when not marked special.
            control = added[index].special or (token.startswith("<|") and token.endswith("|>"))
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def adds_bos(tokenizer) -> bool:
    return tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def _add_tensors(writer: gguf.GGUFWriter, model_dir: Path, config: dict, outtype: str, arch, bar=None) -> None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise TuneloopError(f"GGUF export: no .safetensors weights in {model_dir}")
    total = sum(len(safe_open(file, framework="pt").keys()) for file in files)
    task = bar.add_task(f"gguf {outtype}", total=total, info="") if bar else None
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    # llama.cpp's Llama rope rotates adjacent pairs (q/k rows reordered below); Qwen's is the NeoX rope, HF's own layout.
    interleave = arch == gguf.MODEL_ARCH.LLAMA
    n_head = config["num_attention_heads"]
    n_kv_head = config.get("num_key_value_heads") or n_head
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():
                # Tied: llama.cpp reads the output projection from token_embd when output.weight is absent.
                if name.endswith(_SKIPPED_SUFFIXES) or (name == "lm_head.weight" and config.get("tie_word_embeddings")):
                    continue
                gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise TuneloopError(f"GGUF export: tensor '{name}' in {file.name} has no {gguf.MODEL_ARCH_NAMES[arch]} GGUF name")
                data = weights.get_tensor(name).float().numpy()  # via float32: numpy has no bfloat16
                if interleave and name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _interleave_rope_halves(data, n_head)
                elif interleave and name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _interleave_rope_halves(data, n_kv_head)
                _add_tensor(writer, gguf_name, data, outtype)
                if bar:
                    bar.update(task, advance=1, info=gguf_name)


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, outtype: str) -> None:
    """One tensor in the file's type. Norms and other 1-D tensors stay f32, as llama.cpp's kernels expect; a matrix
    whose rows do not split into Q8_0's 32-value blocks is written f16, as llama.cpp's converter falls back."""
    if data.ndim < 2 or outtype == "f32":
        writer.add_tensor(name, data)
    elif outtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def llama_quantize_binary() -> str | None:
    """llama.cpp's quantizer: $TUNELOOP_LLAMA_QUANTIZE, else `llama-quantize` on PATH."""
    return os.environ.get("TUNELOOP_LLAMA_QUANTIZE") or shutil.which("llama-quantize")


def _llama_quantize(model_dir: Path, out_file: Path, outtype: str, bar=None) -> Path:
    binary = llama_quantize_binary()
    if binary is None or not Path(binary).is_file():
        raise TuneloopError(
            f"GGUF export: {outtype} is made by llama.cpp's quantizer, and no `llama-quantize` is on PATH (or at "
            f"TUNELOOP_LLAMA_QUANTIZE): install llama.cpp (its release binaries, or `cmake --build build --target "
            f"llama-quantize` in a checkout), or export --gguf q8_0, which tuneloop writes itself"
        )
    f16 = export_gguf(model_dir, out_file.with_name(out_file.stem + ".f16.gguf"), "f16", bar)
    partial = out_file.with_name(out_file.name + ".partial")
    task = bar.add_task(f"llama-quantize {QUANTIZER_OUTTYPES[outtype]}", total=None, info="") if bar else None
    try:
        done = subprocess.run([binary, str(f16), str(partial), QUANTIZER_OUTTYPES[outtype]], capture_output=True, text=True)
        if done.returncode != 0:
            raise TuneloopError(f"GGUF export: {binary} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
        partial.replace(out_file)
    finally:
        partial.unlink(missing_ok=True)
        f16.unlink(missing_ok=True)
        if bar:
            bar.update(task, total=1, completed=1)
    return out_file


def _interleave_rope_halves(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to the adjacent pairs llama.cpp's rope rotates.

    HF keeps each head's rows as [first halves of the rotated pairs..., second halves...]; Meta's original
    checkpoints, and llama.cpp, keep each pair side by side. transformers undoes this when loading a GGUF.
    """
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
