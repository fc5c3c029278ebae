"""Model references: embedded name, folder, hub id, and clear errors for everything else."""

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.models import load_model, resolve_model


def test_embedded_name_resolves_to_cached_safetensors(tokenizer):
    path = resolve_model("smollm2-135m-instruct")
    files = {p.name for p in __import__("pathlib").Path(path).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert resolve_model("SmolLM2-135M-Instruct") == path  # case-insensitive, and converted only once
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


def test_local_folder_is_used_as_is(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == str(tiny_model_dir)
    model = load_model(tiny_model_dir)
    assert model.config.num_hidden_layers == 2 and not model.training


def test_hub_id_passes_through_unchanged():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("ref, message", [
    ("llama-7", "unknown model name 'llama-7'"),
    ("./missing/folder", "no such model folder"),
])
def test_unknown_references_fail_clearly(ref, message):
    with pytest.raises(TuneloopError, match=message):
        resolve_model(ref)


def test_folder_without_config(tmp_path):
    with pytest.raises(TuneloopError, match="not a model folder"):
        resolve_model(tmp_path)
