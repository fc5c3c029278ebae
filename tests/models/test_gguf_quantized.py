"""Quantized GGUF export: Q8_0 written in-process, read back by the `gguf` reader and by transformers' GGUF
loader (which dequantizes it as llama.cpp would), and answering like the f16 file on greedy prompts.

The agreement figure is the share of the f16 file's greedy answer tokens, over a few prompts, that the Q8_0 file
picks too when it reads the same text before each (a free-running comparison would count every token after one
flip, and a random tiny model's nearly flat logits flip often). K-quants need llama.cpp's own quantizer; without it the export
says so.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.models.families_kit import KITS, make_family_model
from tuneloop.errors import TuneloopError
from tuneloop.models.gguf_export import ALL_OUTTYPES, export_gguf, llama_quantize_binary

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "My parcel never arrived, what now?"]


def agreement(folder: Path, tmp_path: Path, new_tokens: int) -> tuple[float, list[tuple[str, str]]]:
    """(share of the f16 file's greedy answer tokens that the Q8_0 file also picks, given the same text before each;
    the answers side by side, the Q8_0 file's generated on its own)."""
    files = {kind: export_gguf(folder, tmp_path / f"model-{kind}.gguf", kind) for kind in ("f16", "q8_0")}
    reader = gguf.GGUFReader(files["q8_0"])
    matrices = {t.tensor_type.name for t in reader.tensors if len(t.shape) > 1}
    assert matrices == {"Q8_0"}, matrices  # every matrix quantized (rows of the tiny models split into 32-blocks)
    assert files["q8_0"].stat().st_size < 0.65 * files["f16"].stat().st_size
    tokenizer = AutoTokenizer.from_pretrained(folder)
    models = {kind: AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval() for kind, path in files.items()}
    matched = total = 0
    answers = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = ids if torch.is_tensor(ids) else ids["input_ids"]
        # min_new_tokens: a random model may end at once; a fixed length compares more tokens.
        kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        out = {kind: model.generate(ids, **kwargs)[0] for kind, model in models.items()}
        with torch.no_grad():
            picks = models["q8_0"](out["f16"][None]).logits[0, ids.shape[1] - 1 : -1].argmax(-1)
        answer = out["f16"][ids.shape[1]:]
        matched, total = matched + int((picks == answer).sum()), total + len(answer)
        answers.append((tokenizer.decode(out["q8_0"][ids.shape[1]:]), tokenizer.decode(answer)))
    return matched / total, answers


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_q8_0_of_tiny_qwen2_and_mistral_answers_like_f16(family, tiny_model_dir, tmp_path):
    # Named as `tuneloop export` names it: transformers' GGUF reader takes a Llama file whose name says "mistral" for
    # an architecture gguf-py does not list.
    folder = make_family_model(tmp_path / family / "model", KITS[family], tiny_model_dir)
    share, answers = agreement(folder, tmp_path, new_tokens=12)
    print(f"{family}: Q8_0 vs f16 greedy agreement {share:.0%}")
    # A random model's logits are nearly flat, so a tie can flip; most tokens still agree.
    assert share >= 0.6, answers


def test_q8_0_of_the_embedded_model_answers_like_f16(tmp_path):
    from tuneloop.models.resolve import resolve_model

    share, answers = agreement(Path(resolve_model("smollm2-135m-instruct")), tmp_path, new_tokens=16)
    print(f"SmolLM2-135M-Instruct: Q8_0 vs f16 greedy agreement {share:.0%}: {answers}")
    assert share >= 0.9, answers  # measured: 98% of 48 tokens (the free-running answers were identical)


def test_k_quants_without_llama_quantize_say_how_to_get_it(tiny_model_dir, tmp_path, monkeypatch):
    if llama_quantize_binary():
        pytest.skip("llama-quantize is installed here: the message for its absence cannot be shown")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TuneloopError, match="llama-quantize.*q8_0"):
        export_gguf(tiny_model_dir, tmp_path / "model.gguf", "q4_k_m")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind


@pytest.mark.skipif(llama_quantize_binary() is None, reason="llama.cpp's llama-quantize is not installed")
@pytest.mark.parametrize("outtype, kinds", [("q4_k_m", {"Q4_K", "Q6_K"}), ("q5_k_m", {"Q5_K", "Q6_K"})])
def test_k_quants_through_llama_quantize(outtype, kinds, tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    # K-quants work in blocks of 256 values: rows this wide (llama-quantize falls back to Q5_0/Q8_0 for narrower ones)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    path = export_gguf(tmp_path / "model", tmp_path / "model.gguf", outtype)
    types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors if len(t.shape) > 1}
    assert types <= kinds and types & kinds - {"Q6_K"}, types
    assert not (tmp_path / "model.f16.gguf").exists()


def test_the_cli_and_the_exporter_accept_the_same_types():
    from tuneloop.cli.stages import GGUF_TYPES

    assert tuple(GGUF_TYPES) == tuple(ALL_OUTTYPES)
