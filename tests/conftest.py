"""Shared fixtures: offline environment, a tiny random Llama built from a config, a tiny data set,
random LoRA adapters for it, and a real uvicorn server in a thread.

The tiny model reuses the embedded SmolLM2 tokenizer (real chat template and special tokens), with
2 layers of width 64: a training step takes milliseconds and nothing is downloaded.
"""

from __future__ import annotations

import collections
import json
import os
import random
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

# Never reach a model hub from tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ["billing", "shipping", "returns", "technical", "account"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own registry home; the converted-model cache stays shared."""
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def tokenizer():
    from tuneloop.models import load_tokenizer

    # A folder with the SmolLM2 tokenizer files can stand in for the embedded model (GPU machines
    # where only the tokenizer travels).
    return load_tokenizer(os.environ.get("TUNELOOP_TEST_TOKENIZER", "smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


def make_tiny_model(path: Path, tokenizer) -> Path:
    """A 2-layer random Llama with the embedded model's tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


WORDS = ("order parcel invoice screen cable jacket blender router password refund courier warranty label box "
         "battery charger window door kitchen garden printer camera laptop phone speaker watch shoe coat lamp "
         "table chair desk bottle cup plate sofa bed pillow towel mirror clock radio guitar piano bike helmet").split()


def ticket_rows(n: int, seed: int = 0) -> list[dict]:
    """Small, clean, learnable triage rows (chat form, no system message), distinct enough not to be near duplicates."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        priority = rng.choice(["low", "medium", "high"])
        answer = {"category": category, "priority": priority, "product": None, "summary": f"{category} issue"}
        details = " ".join(rng.sample(WORDS, 6))
        rows.append({"messages": [
            {"role": "user", "content": f"Ticket {i}: a {category} problem ({priority}) with {details}."},
            {"role": "assistant", "content": json.dumps(answer)},
        ]})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


TINY_PIPELINE = """
name: tiny
model: {{name: "{model}"}}
task:
  system_prompt: Reply with JSON.
  output_schema:
    type: object
    required: [category, priority]
    properties:
      category: {{enum: [billing, shipping, returns, technical, account]}}
      priority: {{enum: [low, medium, high]}}
  label_fields: [category, priority]
objective:
  gates: {{json_valid: ">= 0.0"}}
data: {{inputs: [data.jsonl], val_ratio: 0.1, test_ratio: 0.2, seed: 0}}
train: {{max_steps: 3, batch_size: 4, learning_rate: 1.0e-3, max_seq_len: 128, lora: {{r: 4, alpha: 8, dropout: 0.0}}}}
eval: {{max_new_tokens: 8, batch_size: 8, limit: 6, regression: false}}
registry: {{name: tiny}}
"""


@pytest.fixture
def tiny_pipeline(tmp_path, tiny_model_dir) -> Path:
    """A pipeline YAML on the tiny model with 50 rows of data beside it."""
    write_jsonl(tmp_path / "data.jsonl", ticket_rows(50))
    path = tmp_path / "pipeline.yaml"
    path.write_text(TINY_PIPELINE.format(model=tiny_model_dir))
    return path


# --- serving: adapters on the tiny model and a real uvicorn server -------------------------------
def make_adapter(base: Path, out: Path, seed: int, dora: bool = False) -> Path:
    """A LoRA adapter whose weights are random (not the zero init), so it changes the base's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False, use_dora=dora)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(tiny_model_dir, root / "a", 1),
        "b": make_adapter(tiny_model_dir, root / "b", 2),
        "dora": make_adapter(tiny_model_dir, root / "dora", 3, dora=True),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(app):
    """The app on a real uvicorn server on 127.0.0.1, in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class FlakyProxy:
    """A reverse proxy on 127.0.0.1 in front of a real server that answers some requests itself with an error
    (HTTP 429 with Retry-After: 0 by default), to test retries against the real thing behind it. `fail(n)`
    makes the next n requests fail (only those under a path prefix, with `only`); `down()` makes every request
    fail; `seen` counts requests by "METHOD path"."""

    def __init__(self, target: str, status: int = 429):
        import http.server

        import httpx

        self.target, self.status, self.failures, self.seen = target, status, 0, collections.Counter()
        self.only = None  # fail only requests whose path starts with this
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    proxy.seen[f"{self.command} {self.path.split('?')[0]}"] += 1
                    failing = proxy.failures != 0 and (proxy.only is None or self.path.startswith(proxy.only))
                    proxy.failures -= 1 if failing and proxy.failures > 0 else 0
                if failing:
                    payload = json.dumps({"error": {"message": "injected failure", "type": "server_error"}}).encode()
                    self.send_response(proxy.status)
                    self.send_header("retry-after", "0")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, proxy.target + self.path, content=body, headers=headers, timeout=300)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, n: int, only: str | None = None) -> None:
        with self.lock:
            self.failures, self.only = n, only

    def down(self, only: str | None = None) -> None:
        self.fail(-1, only)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(tiny_model_dir, tmp_path, monkeypatch):
    """A hosted provider for the client side: a real `tuneloop serve` of the tiny model (chat and the jobs API,
    which trains there) on 127.0.0.1, reached through a FlakyProxy."""
    from tuneloop.server import ServeOptions, build_app

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "provider-home"))
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{tmp_path / 'provider.db'}", request_log="off",
                                    dashboard=False))
    with running(app) as url:
        proxy = FlakyProxy(url)
        try:
            yield proxy
        finally:
            proxy.close()
