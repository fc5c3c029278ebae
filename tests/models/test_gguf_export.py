"""GGUF export: the file, read back by transformers' GGUF loader, is the same model and tokenizer as the folder.

transformers reads GGUF the way llama.cpp writes it (it undoes the q/k rope permutation on load), so an
exact round trip in f32 checks names, layout, permutation, tied embeddings and the tokenizer together.
"""

from __future__ import annotations

import json

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneloop.errors import TuneloopError
from tuneloop.models.gguf_export import export_gguf

SEQUENCES = [[1, 9690, 198, 2683, 2], list(range(100, 140)), [28, 29, 30, 31, 30, 29, 28]]
CHAT = [
    {"role": "system", "content": "Reply with JSON."},
    {"role": "user", "content": "Order #4521 never arrived: 3 boxes, 12.5 kg. Où est-il? 🙂"},
    {"role": "assistant", "content": '{"category": "shipping", "priority": "high"}'},
]


@pytest.fixture(scope="module")
def original(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def exported_f32(tiny_model_dir, tmp_path_factory):
    return export_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", outtype="f32")


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_f32_export_gives_the_same_logits_and_greedy_text(original, exported_f32):
    loaded = _load(exported_f32)
    for ids in SEQUENCES:
        torch.testing.assert_close(_logits(loaded, ids), _logits(original, ids), rtol=0, atol=1e-4)
    prompt = torch.tensor([SEQUENCES[0]])
    # min_new_tokens: a random model may emit EOS at once, and ten tokens compare more than one.
    kwargs = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 2}
    assert torch.equal(loaded.generate(prompt, **kwargs), original.generate(prompt, **kwargs))


def test_f32_export_carries_the_tokenizer_and_chat_template(tiny_model_dir, exported_f32):
    source = AutoTokenizer.from_pretrained(tiny_model_dir)
    loaded = AutoTokenizer.from_pretrained(exported_f32.parent, gguf_file=exported_f32.name)
    text = source.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert loaded(text)["input_ids"] == source(text)["input_ids"]
    assert loaded.chat_template == source.chat_template
    assert loaded.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == text
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        source.bos_token_id, source.eos_token_id, source.pad_token_id,
    )


def test_file_layout_follows_llama_cpp(exported_f32):
    reader = gguf.GGUFReader(exported_f32)
    tensors = {t.name: t.tensor_type for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert len(tensors) == 1 + 2 * 9 + 1  # token_embd, 9 per block, output_norm
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("tokenizer.ggml.model").contents() == "gpt2"
    assert reader.get_field("tokenizer.ggml.pre").contents() == "smollm"
    assert reader.get_field("llama.attention.head_count_kv").contents() == 2
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.ALL_F32


def test_f16_export_is_close(original, tiny_model_dir, tmp_path):
    path = export_gguf(tiny_model_dir, tmp_path / "tiny-f16.gguf")  # f16 is the default
    tensors = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert tensors["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # 1-D stays f32
    loaded = _load(path)
    for ids in SEQUENCES:
        torch.testing.assert_close(_logits(loaded, ids), _logits(original, ids), rtol=0, atol=2e-3)


def test_an_architecture_the_exporter_does_not_write_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}))
    with pytest.raises(TuneloopError, match="writes LlamaForCausalLM.*Phi3ForCausalLM.*is MixtralForCausalLM.*convert_hf_to_gguf"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_llama3_rope_scaling_is_refused(tmp_path):
    config = {"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TuneloopError, match="rope scaling 'llama3' is not supported"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.partial").exists()


def test_unknown_outtype_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TuneloopError, match="outtype 'q4_0'.*f32, f16"):
        export_gguf(tiny_model_dir, tmp_path / "out.gguf", outtype="q4_0")
