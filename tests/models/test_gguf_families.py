"""GGUF export of the families beyond Llama and Qwen, checked without llama.cpp (tests/models/test_gguf_llamacpp.py
runs the files in llama.cpp itself where it is installed): SentencePiece vocabularies read back by transformers'
GGUF tokenizer as the same tokenizer, Phi-3's longrope factors written as the tensors llama.cpp reads, and a Gemma
whose attention scale llama.cpp would not reproduce refused. (Each family's weights are checked by test_families.py's
f32 round trip.)
"""

from __future__ import annotations

import json
from dataclasses import replace

import gguf
import numpy as np
import pytest
from transformers import AutoTokenizer

from tests.models.families_kit import KITS, SENTENCEPIECE, make_family_model, make_sentencepiece_tokenizer
from tuneloop.errors import TuneloopError
from tuneloop.models.gguf_export import export_gguf

TEXTS = ["What is the capital of France?", "My parcel never arrived,  what now?\n3 boxes, 12.5 kg. Où est-il? 🙂"]


def _field(reader: gguf.GGUFReader, key: str):
    field = reader.fields[key]
    return field.contents()


@pytest.mark.parametrize("family", ["gemma3_text", "phi3"])
def test_a_sentencepiece_vocabulary_reads_back_as_the_same_tokenizer(family, tmp_path):
    bos, eos, prefix = SENTENCEPIECE[family]
    folder = make_family_model(tmp_path / "model", KITS[family], make_sentencepiece_tokenizer(tmp_path / "spm", bos, eos, prefix))
    path = export_gguf(folder, tmp_path / "model.gguf", "f32")
    reader = gguf.GGUFReader(path)
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert _field(reader, "tokenizer.ggml.add_space_prefix") is prefix
    tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
    assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE and types[tokens.index(bos)] == gguf.TokenType.CONTROL
    scores = _field(reader, "tokenizer.ggml.scores")
    assert scores[tokens.index("▁capital")] < 0 and scores[tokens.index("▁capital")] != scores[tokens.index("▁the")]
    ours, reread = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS:  # whole words, merges in score order, and bytes for what the pieces lack (é, 🙂)
        assert reread(text)["input_ids"] == ours(text)["input_ids"], text


def test_phi3_longrope_factors_go_in_as_tensors(tokenizer, tiny_model_dir, tmp_path):
    long, short = [1.0 + i for i in range(8)], [1.0 + 0.1 * i for i in range(8)]
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 2048, "long_factor": long, "short_factor": short}
    kit = replace(KITS["phi3"], config={"max_position_embeddings": 8192, "original_max_position_embeddings": 2048, "rope_parameters": rope})
    path = export_gguf(make_family_model(tmp_path / "model", kit, tiny_model_dir), tmp_path / "model.gguf", "q8_0")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    np.testing.assert_array_equal(tensors["rope_factors_long.weight"].data, np.float32(long))
    np.testing.assert_array_equal(tensors["rope_factors_short.weight"].data, np.float32(short))
    assert _field(reader, "phi3.rope.scaling.original_context_length") == 2048
    assert _field(reader, "phi3.rope.scaling.attn_factor") == pytest.approx((1 + np.log(4) / np.log(2048)) ** 0.5)


def test_a_gemma_whose_attention_scale_llama_cpp_fixes_otherwise_is_refused(tiny_model_dir, tmp_path):
    kit = KITS["gemma2"]
    folder = make_family_model(tmp_path / "model", replace(kit, config={**kit.config, "query_pre_attn_scalar": 256}), tiny_model_dir)
    with pytest.raises(TuneloopError, match=r"query_pre_attn_scalar.*1/sqrt\(16\)"):
        export_gguf(folder, tmp_path / "model.gguf", "f16")
    assert not list(tmp_path.glob("*.gguf*"))
    assert json.loads((folder / "config.json").read_text())["query_pre_attn_scalar"] == 256
