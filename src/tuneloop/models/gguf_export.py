"""Export a Hugging Face model folder (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3) to one GGUF file that llama.cpp and
ollama can run.

The folder is what `save_pretrained` writes (config.json, safetensors weights, tokenizer files), e.g. a
LoRA adapter merged into SmolLM2. The file follows llama.cpp's own converter (convert_hf_to_gguf.py, LlamaModel /
Qwen2Model / Qwen3Model / Gemma2Model / Gemma3Model / Phi3MiniModel): the architecture's hyperparameters, the
vocabulary (gguf_vocab.py), and the weights under GGUF names in f32, f16 or Q8_0 (the `gguf` library's quantizer,
as the converter's --outtype q8_0). Only the `gguf` library is used, so no llama.cpp checkout is needed; Q4_K_M /
Q5_K_M are made from the f16 file by llama.cpp's `llama-quantize` when it is installed. Other families' merged
folders convert with llama.cpp's own convert_hf_to_gguf.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

from tuneloop.errors import TuneloopError
from tuneloop.models.gguf_vocab import add_tokenizer


@dataclass(frozen=True)
class _Arch:
    gguf: gguf.MODEL_ARCH
    interleave_rope: bool = False  # llama.cpp's Llama rope rotates adjacent pairs; the others are NeoX, HF's layout
    norm_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + weight); llama.cpp's by the weight it reads


# transformers class -> llama.cpp architecture. Mistral is a Llama to llama.cpp (its converter's LlamaModel).
ARCHITECTURES = {
    "LlamaForCausalLM": _Arch(gguf.MODEL_ARCH.LLAMA, interleave_rope=True),
    "MistralForCausalLM": _Arch(gguf.MODEL_ARCH.LLAMA, interleave_rope=True),
    "Qwen2ForCausalLM": _Arch(gguf.MODEL_ARCH.QWEN2), "Qwen3ForCausalLM": _Arch(gguf.MODEL_ARCH.QWEN3),
    "Gemma2ForCausalLM": _Arch(gguf.MODEL_ARCH.GEMMA2, norm_offset=1.0),
    "Gemma3ForCausalLM": _Arch(gguf.MODEL_ARCH.GEMMA3, norm_offset=1.0),
    "Phi3ForCausalLM": _Arch(gguf.MODEL_ARCH.PHI3),
}
# llama.cpp fixes Gemma's attention scale at 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B models, which it
# tells by their layer count.
_GEMMA_27B_LAYERS = {gguf.MODEL_ARCH.GEMMA2: 46, gguf.MODEL_ARCH.GEMMA3: 62}
OUTTYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
# K-quants need llama.cpp's importance-free quantizer (its C code): written from an f16 file by `llama-quantize`.
QUANTIZER_OUTTYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M"}
ALL_OUTTYPES = (*OUTTYPES, *QUANTIZER_OUTTYPES)

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
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch.gguf])
    try:
        _add_hyperparameters(writer, config, arch, model_dir.name, OUTTYPES[outtype])
        add_tokenizer(writer, model_dir, config["vocab_size"])
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


def _rope_settings(config: dict, layer_type: str = "full_attention") -> dict:
    # transformers 5 nests rope settings under rope_parameters (per layer type for Gemma 3); 4.x keeps rope_theta and
    # rope_scaling at top level.
    rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
    return rope.get(layer_type, rope)


def _rope(config: dict, layer_type: str = "full_attention", kinds=("default", "linear")) -> tuple[float, float | None]:
    """(rope base frequency, linear scaling factor or None) of one kind of layer."""
    rope = _rope_settings(config, layer_type)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in kinds:
        # llama3/yarn/longrope scaling needs extra tensors and keys (rope_freqs) that this exporter does not write.
        raise TuneloopError(f"GGUF export: rope scaling '{kind}' is not supported (only default or linear rope): "
                            f"convert the merged folder with llama.cpp's convert_hf_to_gguf.py")
    default = config.get("rope_local_base_freq", 10000.0) if layer_type == "sliding_attention" else 10000.0
    theta = rope.get("rope_theta", config.get("rope_theta", default))
    return float(theta), (float(rope["factor"]) if kind == "linear" else None)


def _add_hyperparameters(writer: gguf.GGUFWriter, config: dict, arch: _Arch, name: str, file_type: int) -> None:
    theta, linear_factor = _rope(config, kinds=("default", "linear", *(("longrope",) if arch.gguf == gguf.MODEL_ARCH.PHI3 else ())))
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope_dim = head_dim
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(theta)
    if linear_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(linear_factor)
    if arch.gguf in _GEMMA_27B_LAYERS:
        _add_gemma(writer, config, arch.gguf, n_head, head_dim)
    elif arch.gguf == gguf.MODEL_ARCH.PHI3:
        rope_dim = _add_phi3(writer, config, head_dim)
    writer.add_rope_dimension_count(rope_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_phi3(writer: gguf.GGUFWriter, config: dict, head_dim: int) -> int:
    """Phi-3: the original context, the (ignored) sliding window and longrope's attention factor; returns the rotary
    dimension (partial rotary)."""
    rope = _rope_settings(config)
    original = _phi3_original_context(config)
    writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_sliding_window(config.get("sliding_window") or 0)  # llama.cpp runs Phi-3 without it either way
    if rope.get("long_factor"):  # longrope (Phi-3 128k, Phi-3.5, Phi-4-mini): the factors go in as tensors
        scale = config["max_position_embeddings"] / original
        default = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
        writer.add_rope_scaling_attn_factors(float(rope.get("attention_factor") or default))
    return int(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) * head_dim)


def _phi3_original_context(config: dict) -> int:
    rope = _rope_settings(config)
    return int(rope.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
               or config["max_position_embeddings"])


def _extra_tensors(config: dict, arch: _Arch) -> dict[str, np.ndarray]:
    """Tensors llama.cpp reads that the checkpoint keeps in its config: Phi-3's longrope factors."""
    rope = _rope_settings(config)
    if arch.gguf != gguf.MODEL_ARCH.PHI3 or not rope.get("long_factor"):
        return {}
    return {f"{gguf.TENSOR_NAMES[tensor]}.weight": np.asarray(rope[key], dtype=np.float32)
            for tensor, key in ((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, "long_factor"), (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, "short_factor"))}


def _add_gemma(writer: gguf.GGUFWriter, config: dict, arch, n_head: int, head_dim: int) -> None:
    """Gemma 2/3: soft caps, the sliding window and which layers use it, and the local layers' rope base."""
    scaled = config["hidden_size"] // n_head if config["num_hidden_layers"] == _GEMMA_27B_LAYERS[arch] else head_dim
    if (config.get("query_pre_attn_scalar") or scaled) != scaled:
        raise TuneloopError(
            f"GGUF export: this model scales attention by 1/sqrt({config['query_pre_attn_scalar']}) (query_pre_attn_scalar), "
            f"and llama.cpp fixes it at 1/sqrt({scaled}) for this size: its GGUF would answer differently"
        )
    for key, add in (("attn_logit_softcapping", writer.add_attn_logit_softcapping),
                     ("final_logit_softcapping", writer.add_final_logit_softcapping)):
        if config.get(key):
            add(float(config[key]))
    layer_types = config.get("layer_types") or []
    if config.get("sliding_window") and "sliding_attention" in layer_types:
        writer.add_sliding_window(config["sliding_window"])
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types])
        writer.add_rope_freq_base_swa(_rope(config, "sliding_attention")[0])


def _add_tensors(writer: gguf.GGUFWriter, model_dir: Path, config: dict, outtype: str, arch: _Arch, bar=None) -> None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise TuneloopError(f"GGUF export: no .safetensors weights in {model_dir}")
    total = sum(len(safe_open(file, framework="pt").keys()) for file in files)
    task = bar.add_task(f"gguf {outtype}", total=total, info="") if bar else None
    names = gguf.get_tensor_name_map(arch.gguf, config["num_hidden_layers"])
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
                    raise TuneloopError(f"GGUF export: tensor '{name}' in {file.name} has no {gguf.MODEL_ARCH_NAMES[arch.gguf]} GGUF name")
                data = weights.get_tensor(name).float().numpy()  # via float32: numpy has no bfloat16
                if arch.interleave_rope and name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _interleave_rope_halves(data, n_head)
                elif arch.interleave_rope and name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _interleave_rope_halves(data, n_kv_head)
                elif arch.norm_offset and name.endswith("norm.weight"):
                    data = data + np.float32(arch.norm_offset)
                _add_tensor(writer, gguf_name, data, outtype)
                if bar:
                    bar.update(task, advance=1, info=gguf_name)
    for gguf_name, data in _extra_tensors(config, arch).items():
        _add_tensor(writer, gguf_name, data, outtype)


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
