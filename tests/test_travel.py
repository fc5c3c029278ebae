"""Artifacts that travel and a CLI that behaves: an adapter found by its base's hub id alone, files written with
the umask, progress lines through a pipe, --version, and an Ollama Modelfile that renders the chat template."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.conftest import TINY_PIPELINE, ticket_rows, write_jsonl
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.train.trainer import train

TUNELOOP = str(Path(sys.executable).parent / "tuneloop")
HUB_ID = "tuneloop-tests/tiny-llama"

# Run with -I (no tuneloop on the path, no user site) in a process that knows only the Hugging Face cache.
PEFT_ALONE = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
assert "tuneloop" not in sys.modules
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
out = model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=2)
print(json.dumps(out[0].tolist()))
"""


@pytest.fixture
def trained(tmp_path, tiny_model_dir, data_dir_rows):
    cfg = TrainConfig(max_steps=3, batch_size=4, learning_rate=1e-2, max_seq_len=128, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    out = tmp_path / "run"
    train(cfg, ModelConfig(name=str(tiny_model_dir), hub_id=HUB_ID), data_dir_rows, out)
    return out


@pytest.fixture
def data_dir_rows(tmp_path):
    rows = ticket_rows(20)
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows[:16])
    write_jsonl(folder / "val.jsonl", rows[16:])
    return folder


def hub_cache(home: Path, hub_id: str, folder: Path) -> Path:
    """The Hugging Face cache layout (hub/models--org--name/snapshots/REV + refs/main) holding `folder`'s files."""
    repo = home / "hub" / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).symlink_to(file.resolve())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


def test_an_adapter_loads_in_peft_where_only_the_hub_id_is_known(trained, tiny_model_dir, tmp_path):
    from tuneloop.models import load_model

    adapter = trained / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    assert str(tiny_model_dir) not in (adapter / "README.md").read_text()
    manifest = json.loads((trained / "manifest.json").read_text())["model"]
    assert manifest["name"] == str(tiny_model_dir) and manifest["hub_id"] == HUB_ID
    assert manifest["local_path"] == str(tiny_model_dir.resolve()) and len(manifest["sha256"]) == 64

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "adapter").symlink_to(adapter)  # another folder: nothing beside the adapter says where its base lives
    hub_cache(tmp_path / "hf", HUB_ID, tiny_model_dir)
    ids = [[1, 9690, 198, 2683, 28, 29, 30]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELOOP", "PYTHONPATH"))}
    done = subprocess.run([sys.executable, "-I", "-c", PEFT_ALONE, str(moved / "adapter"), json.dumps(ids)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env={**env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = load_model(tiny_model_dir, adapter=adapter).generate(torch.tensor(ids), max_new_tokens=10, min_new_tokens=10,
                                                                do_sample=False, pad_token_id=2)
    assert theirs == ours[0].tolist()


def test_loading_falls_back_to_the_hub_id_when_the_local_base_is_gone(tmp_path, monkeypatch, tiny_model_dir):
    from tuneloop.models.provenance import adapter_base, for_hub_id, hub_id, loadable_base

    assert loadable_base({"name": str(tiny_model_dir), "hub_id": HUB_ID}) == str(tiny_model_dir)
    assert loadable_base({"name": str(tmp_path / "gone"), "hub_id": HUB_ID}) == HUB_ID
    # The embedded model stands in for its original when the Hugging Face cache does not hold that.
    assert for_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id(hub_cache(tmp_path / "hf", "org/name", tiny_model_dir)) == "org/name"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    assert adapter_base(tmp_path / "a") == "smollm2-135m-instruct"


def test_a_hub_id_that_is_not_one_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="org/name"):
        ModelConfig(hub_id="/home/me/model")


def test_run_files_follow_the_umask(trained):
    mask = os.umask(0o022)
    os.umask(mask)
    wrong = [f"{path.relative_to(trained)}: {oct(path.stat().st_mode & 0o777)}" for path in [trained, *trained.rglob("*")]
             if not path.is_symlink() and path.stat().st_mode & 0o777 != (0o777 if path.is_dir() else 0o666) & ~mask]
    assert not wrong
    for name in ("manifest.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (trained / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_train_through_a_pipe_prints_progress_while_it_runs(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "data.jsonl", ticket_rows(50))
    config = tmp_path / "pipeline.yaml"
    config.write_text(TINY_PIPELINE.format(model=tiny_model_dir).replace("max_steps: 3", "max_steps: 60"))
    env = {**os.environ, "TUNELOOP_PROGRESS_SECONDS": "0.5", "OMP_NUM_THREADS": "1"}
    prepared = subprocess.run([TUNELOOP, "data", "prepare", "data.jsonl", "--out", "d", "--config", config], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=env)
    assert prepared.returncode == 0, prepared.stderr
    process = subprocess.Popen([TUNELOOP, "train", config, "--data", "d", "--out", "t"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    seen_running = []
    for line in process.stdout:
        if re.search(r"train · \d+/60 \(\d+%\) · loss [\d.]+ .* tok/s · .*left", line):
            seen_running.append((line, process.poll()))
    assert process.wait(timeout=600) == 0
    assert seen_running, "no progress line with step, loss, tokens/s and time left"
    assert any(code is None for _, code in seen_running), "progress lines came only after the process ended"


def test_version():
    from tuneloop import __version__

    done = subprocess.run([TUNELOOP, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"tuneloop {__version__}"


def render_go(template: str, messages: list[dict]) -> str:
    """Render the one shape of Go template models/ollama.py writes: an opening, a range over .Messages with
    if/else-if on .Role, the folded system text in the user branch, the answer's opening."""
    from tuneloop.models.ollama import FOLD_CONDITION

    head = re.fullmatch(r"(.*?)\{\{ range \$i, \$_ := \.Messages \}\}(.*)\{\{ end \}\}\{\{ end \}\}(.*)", template, re.S)
    branches = dict((role, body) for role, body in re.findall(
        r'\{\{ (?:if|else if) eq \.Role "(\w+)" \}\}(.*?)(?=\{\{ else if eq \.Role|\Z)', head.group(2), re.S))
    fold = re.escape(FOLD_CONDITION) + r"\{\{ \(index \$\.Messages 0\)\.Content \}\}(.*?)\{\{ end \}\}"
    out = [head.group(1)]
    for i, message in enumerate(messages):
        body = branches[message["role"]]
        system_first = i == 1 and messages[0]["role"] == "system"
        body = re.sub(fold, lambda m: messages[0]["content"] + m.group(1) if system_first else "", body, flags=re.S)
        out.append(body.replace("{{ .Content }}", message["content"]))
    return "".join(out) + head.group(3)


def test_the_modelfile_renders_conversations_as_the_chat_template_does(tokenizer, tmp_path):
    from tuneloop.models.chat import stop_ids
    from tuneloop.models.ollama import write_modelfile

    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer)]
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "model.gguf", tokenizer, "Reply with JSON.", stops, 8192)
    text = path.read_text()
    assert "FROM ./model.gguf" in text and 'SYSTEM """Reply with JSON."""' in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.0" in text and "PARAMETER num_ctx 8192" in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    chat = [{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": '{"category": "shipping"}'}, {"role": "user", "content": "And the refund?"}]
    assert render_go(template, chat) == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    # Without a task system prompt, the one SmolLM2's template writes into a conversation that has none.
    alone = write_modelfile(tmp_path / "Modelfile.plain", tmp_path / "model.gguf", tokenizer, None, stops).read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in alone


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "gemma3_text", "phi3", "gemma3_text-sentencepiece"])
def test_the_modelfile_renders_every_familys_conversations_as_tuneloop_trains_them(family, tiny_model_dir, tmp_path):
    """Gemma 2 and Mistral fold the system text into the first user turn (tuneloop does, for training), Gemma 3's own
    template does, Phi-3's closes a finished conversation with EOS, Mistral's user turn has no end-of-turn token, and
    a BOS is written by the template unless the tokenizer adds it (then llama.cpp prepends it, as the GGUF says)."""
    from tests.models.families_kit import KITS, SENTENCEPIECE, make_family_model, make_sentencepiece_tokenizer
    from tuneloop.models.chat import render_chat
    from tuneloop.models.gguf_vocab import adds_bos
    from tuneloop.models.ollama import go_template, read_turns

    kit = KITS[family.split("-")[0]]
    vocabulary = make_sentencepiece_tokenizer(tmp_path / "spm", *SENTENCEPIECE[kit.model_type]) if "-" in family else tiny_model_dir
    tokenizer = AutoTokenizer.from_pretrained(make_family_model(tmp_path / "model", kit, vocabulary))
    template = go_template(read_turns(tokenizer))
    for chat in ([{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": "Where is my parcel?"},
                  {"role": "assistant", "content": '{"category": "shipping"}'}, {"role": "user", "content": "And the refund?"}],
                 [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]):
        expected = render_chat(tokenizer, chat, generation_prompt=True)
        if adds_bos(tokenizer):
            assert expected.startswith(tokenizer.bos_token) and not template.startswith(tokenizer.bos_token)
            expected = expected[len(tokenizer.bos_token):]
        assert render_go(template, chat) == expected
