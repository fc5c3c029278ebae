"""GGUF files run in llama.cpp itself: every family the exporter writes, read by `llama-server`, tokenizes text as
transformers does and answers greedily as the model folder does; the embedded model's Q8_0 file picks the f16
file's greedy tokens; K-quants come from `llama-quantize`.

llama.cpp is not a Python dependency: these tests run where `llama-server` is on PATH or at TUNELOOP_LLAMA_SERVER
(built from the llama.cpp source that llama-cpp-python's sdist ships, as benchmarks/serve_vs_llamacpp.py says), and
skip elsewhere, saying why.

Agreement is teacher-forced, as in test_gguf_quantized.py: for each token of one side's greedy answer, does the
other side pick it given the same text before it. A free-running comparison would count every token after one flip,
and a random tiny model's nearly flat logits can flip between two correct float implementations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import free_port
from tests.models.families_kit import KITS, SENTENCEPIECE, make_family_model, make_sentencepiece_tokenizer
from tuneloop.models.gguf_export import export_gguf

LLAMA_SERVER = os.environ.get("TUNELOOP_LLAMA_SERVER") or shutil.which("llama-server")
pytestmark = pytest.mark.skipif(not LLAMA_SERVER, reason="llama.cpp's llama-server is not installed (set TUNELOOP_LLAMA_SERVER)")

TEXTS = ["What is the capital of France?", "My parcel never arrived,  what now?\n3 boxes, 12.5 kg. Où est-il? 🙂",
         "Reply with JSON: the category and the priority of the ticket."]


@contextmanager
def llama_server(gguf: Path, log: Path):
    port = free_port()
    cmd = [LLAMA_SERVER, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-np", "1", "-c", "1024", "--no-webui"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def llama_tokens(url: str, text: str, add_special: bool = True) -> list[int]:
    body = {"content": text, "add_special": add_special, "parse_special": True}
    return httpx.post(f"{url}/tokenize", json=body, timeout=30).json()["tokens"]


def llama_greedy(url: str, ids: list[int], n: int, top: int = 0) -> list[int] | tuple[list[int], list[dict[int, float]]]:
    """llama.cpp's greedy answer to the token ids; with `top`, also its log-probabilities of the `top` likeliest
    tokens at each step ({id: logprob})."""
    body = {"prompt": ids, "n_predict": n, "samplers": ["top_k"], "top_k": 1, "cache_prompt": False, "return_tokens": True,
            "ignore_eos": True, "n_probs": top}
    answer = httpx.post(f"{url}/completion", json=body, timeout=120).json()
    if not top:
        return answer["tokens"]
    # (none for a token that ends inside a character: llama-server holds back its bytes, and their probabilities)
    steps = answer.get("completion_probabilities", [])
    return answer["tokens"], [{p["id"]: p["logprob"] for p in step["top_logprobs"]} for step in steps]


def prompt_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


def folder_agreement(model, url: str, ids: list[int], n: int) -> tuple[int, int, float, int]:
    """(tokens of llama.cpp's greedy answer that the model folder picks too, tokens, the largest difference between
    the two sides' log-probabilities of llama.cpp's five likeliest tokens at each step, steps compared). Each step is asked for on
    its own (the answer so far as prompt): llama-server's per-token probabilities of one long answer can shift
    against its tokens where it holds back bytes of an unfinished character."""
    answer = llama_greedy(url, ids, n)
    with torch.no_grad():
        logprobs = model(torch.tensor([ids + answer])).logits[0, len(ids) - 1 : -1].log_softmax(-1)
    picks = logprobs.argmax(-1).tolist()
    gap, compared = 0.0, 0
    for step in range(len(answer)):
        for likeliest in llama_greedy(url, ids + answer[:step], 1, top=5)[1]:
            gap = max(gap, *(abs(logprobs[step, token].item() - value) for token, value in likeliest.items()))
            compared += 1
    return sum(a == b for a, b in zip(picks, answer)), len(answer), gap, compared


# Phi-3 128k / Phi-3.5 / Phi-4-mini: longrope, whose factors go into the file as tensors (short ones below 2048 tokens).
LONGROPE = {"max_position_embeddings": 8192, "original_max_position_embeddings": 2048, "rope_parameters": {
    "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 2048,
    "long_factor": [1.0 + i for i in range(8)], "short_factor": [1.0 + 0.1 * i for i in range(8)]}}


# Gemma 2's soft caps low enough to bite (its published 50 and 30 are llama.cpp's defaults, so they would not show)
SOFTCAPS = {"attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "phi3-longrope"])
def test_llama_cpp_tokenizes_and_answers_as_the_folder_does(family, tiny_model_dir, tmp_path):
    kit = KITS[family.split("-")[0]]
    # Weights ten times the usual init: attention and logits far from flat, so a wrong rope, norm or scale shows.
    kit = replace(kit, config={**kit.config, "initializer_range": 0.2, **(LONGROPE if family == "phi3-longrope" else {}),
                               **(SOFTCAPS if family == "gemma2" else {})})
    family = kit.model_type
    vocabulary = tiny_model_dir
    if family in SENTENCEPIECE:
        bos, eos, prefix = SENTENCEPIECE[family]
        vocabulary = make_sentencepiece_tokenizer(tmp_path / "spm", bos, eos, prefix)
    folder = make_family_model(tmp_path / family / "model", kit, vocabulary)
    gguf = export_gguf(folder, tmp_path / "model.gguf", "f32")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # eager: the reference attention (SDPA has no soft cap)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    matched = total = gap = compared = 0
    with llama_server(gguf, tmp_path / "llama.log") as url:
        for text in TEXTS:
            assert llama_tokens(url, text) == tokenizer(text)["input_ids"], text
            ids = prompt_ids(tokenizer, text)
            if not (family in SENTENCEPIECE and SENTENCEPIECE[family][2]):
                # (llama.cpp puts a `▁` after every special token of a space-prefix vocabulary, as the legacy
                # SentencePiece tokenizers did; transformers' current ones do not, so those prompts go in as ids)
                assert llama_tokens(url, tokenizer.decode(ids), add_special=False) == ids  # the template writes BOS
            hits, count, step_gap, steps = folder_agreement(model, url, ids, 12)
            matched, total, gap, compared = matched + hits, total + count, max(gap, step_gap), compared + steps
    print(f"{folder.parent.name}: llama.cpp's greedy tokens picked by transformers on the folder: {matched}/{total}, "
          f"log-probabilities within {gap:.1e} over {compared} steps")
    assert matched / total >= 0.9 and compared >= total // 3
    # f32 on both sides: the same numbers up to float rounding, which these peaked weights amplify to ~1e-2 at most
    # (Phi-3 longrope without its factor tensors: 5.2, and half the tokens differ)
    assert gap < 0.05, gap


def test_the_embedded_models_q8_0_answers_like_its_f16_in_llama_cpp(tmp_path):
    from tuneloop.models.resolve import resolve_model

    folder = Path(resolve_model("smollm2-135m-instruct"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers = {}
    files = {kind: export_gguf(folder, tmp_path / f"model-{kind}.gguf", kind) for kind in ("f16", "q8_0")}
    with llama_server(files["f16"], tmp_path / "f16.log") as url:
        prompts = [prompt_ids(tokenizer, text) for text in ("What is the capital of France?", *TEXTS[1:])]
        answers = [llama_greedy(url, ids, 16) for ids in prompts]
    matched = total = 0
    with llama_server(files["q8_0"], tmp_path / "q8_0.log") as url:
        for ids, answer in zip(prompts, answers):
            for k, token in enumerate(answer):
                matched += llama_greedy(url, ids + answer[:k], 1) == [token]
                total += 1
    print(f"SmolLM2-135M-Instruct in llama.cpp: Q8_0 picks the f16 file's greedy token {matched}/{total}")
    assert matched / total >= 0.9
