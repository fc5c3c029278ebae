"""vLLM as the token engine behind tuneloop's gateway (`tuneloop serve --engine vllm`).

tuneloop keeps everything a deployment sees (auth, limits, registry names and aliases resolved per
request, A/B routes, routers, knowledge bases, the request log, metrics, feedback, the jobs API) and
vLLM only turns token ids into tokens. Per served base model, a vLLM OpenAI server runs as a child
process on a private loopback port, started from its own Python (vLLM pins its own torch and
transformers, so it usually lives in another environment: `make vllm` makes `.venv-vllm`).

The seam is the one our own engine has (serve/engine.py): `submit(Generation)` with the prompt already
rendered and tokenized by tuneloop, so both engines see the same token ids. Requests go to vLLM's
/v1/completions with `prompt` as those ids and stream back; LoRA adapters are loaded into the running
vLLM on first use (`/v1/load_lora_adapter`), many on one base. What vLLM cannot serve (DoRA, a rank
above `max_lora_rank`) is refused with the reason. If the child dies, /health says so and the next
request restarts it once; a child that cannot start is an error at start-up, never a hang.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tuneloop.errors import TuneloopError
from tuneloop.models import load_tokenizer, resolve_model
from tuneloop.serve.engine import Overloaded
from tuneloop.serve.generation import GREEDY_BELOW, AdapterRef, Generation
from tuneloop.serve.vllm_settings import VllmSettings

log = logging.getLogger(__name__)
BASE_NAME = "base"  # the served name of the base model inside vLLM
# Runs in vLLM's own Python, before its server: when tuneloop's process is gone, even after a kill -9 that
# leaves no chance to clean up, it stops vLLM's whole process group, so no engine is left holding memory.
LAUNCHER = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.killpg(0, signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["vllm.entrypoints.openai.api_server", *sys.argv[2:]]
runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
"""


class EngineUnavailable(Overloaded):
    """The engine process is down: the client should retry (503), the server is restarting it."""

    status = 503


class VllmEngine:
    def __init__(self, ref: str | Path, *, settings: VllmSettings | None = None, max_batch: int = 16, max_queue: int = 64,
                 max_adapters: int = 8):
        self.ref, self.settings = str(ref), settings or VllmSettings()
        self.folder = resolve_model(ref)
        self.tokenizer = load_tokenizer(ref)
        self.context = self.settings.max_model_len or min(_model_context(Path(self.folder)), 4096)
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.adapters: OrderedDict[str, AdapterRef] = OrderedDict()
        self.last_batch_size, self.tokens_per_second, self.restarts = 0, 0.0, 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_batch + max_queue, thread_name_prefix=f"vllm:{Path(self.ref).name}")
        self._process: subprocess.Popen | None = None
        self._start()

    # --- the seam the handler uses (as serve/engine.py) ----------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    @property
    def queue_depth(self) -> int:
        return max(self._in_flight - self.max_batch, 0)

    @property
    def healthy(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def submit(self, job: Generation) -> None:
        with self._lock:
            if self._in_flight >= self.max_batch + self.max_queue:
                raise Overloaded(f"{self._in_flight} requests are already in flight (limit {self.max_batch + self.max_queue})")
            self._in_flight += 1
        try:
            self._ensure_running()
            if job.adapter is not None:
                self.load_adapter(job.adapter)
        except Exception:
            with self._lock:
                self._in_flight -= 1
            raise
        self._pool.submit(self._generate, job)

    def load_adapter(self, adapter: AdapterRef) -> None:
        with self._lock:
            if adapter.key in self.adapters:
                self.adapters.move_to_end(adapter.key)
                return
        _check_adapter(adapter, self.settings.max_lora_rank)
        response = self._http.post("/v1/load_lora_adapter", json={"lora_name": adapter.key, "lora_path": adapter.path}, timeout=300)
        if response.status_code != 200 and "already been loaded" not in response.text:
            raise TuneloopError(f"vLLM could not load adapter {adapter.key} ({adapter.path}): {response.text[:300]}")
        with self._lock:
            self.adapters[adapter.key] = adapter
            evicted = list(self.adapters)[: max(0, len(self.adapters) - self.max_adapters)]
        for key in evicted:
            self.unload_adapter(key)

    def unload_adapter(self, key: str) -> bool:
        with self._lock:
            if key not in self.adapters:
                return False
            del self.adapters[key]
        self._http.post("/v1/unload_lora_adapter", json={"lora_name": key}, timeout=60)
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop vLLM (requests in flight are done by now: the server drained them) and the request threads."""
        self._terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def kill(self) -> None:
        """At once, for a process that must exit now: SIGKILL vLLM's process group."""
        if self._process is not None and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def constraint_for(self, grammar: str) -> None:
        """Check `grammar` compiles (so a bad schema is a 400 here, not an error inside vLLM); vLLM applies it, from
        `Generation.grammar`, so there is no matcher on this side."""
        from tuneloop.grammar import Constraint

        Constraint(self.tokenizer, grammar, len(self.tokenizer))

    # --- one request ---------------------------------------------------------------------------------
    def _generate(self, job: Generation) -> None:
        started, tokens = time.perf_counter(), 0
        body = {"model": job.adapter.key if job.adapter else BASE_NAME, "prompt": job.prompt_ids, "max_tokens": job.max_tokens,
                "temperature": 0.0 if job.sampling.temperature < GREEDY_BELOW else job.sampling.temperature,
                "top_p": job.sampling.top_p, "stop": job.stop or None, "stream": True, "stream_options": {"include_usage": True},
                "skip_special_tokens": True}
        if job.sampling.seed is not None:
            body["seed"] = job.sampling.seed
        if job.grammar is not None:  # the same Lark text our engine uses, through vLLM's llguidance backend
            body["structured_outputs"] = {"grammar": job.grammar}
        reason = None
        try:
            with self._http.stream("POST", "/v1/completions", json=body, timeout=None) as response:
                if response.status_code != 200:
                    response.read()
                    return job.fail(f"vLLM refused the request ({response.status_code}): {_message(response.text)}")
                for line in response.iter_lines():
                    if job.cancelled:
                        return job.fail("cancelled")  # closing the stream aborts the request in vLLM
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    for choice in event.get("choices") or []:
                        job.add_text(choice.get("text") or "")
                        reason = choice.get("finish_reason") or reason
                    if event.get("usage"):
                        tokens = event["usage"].get("completion_tokens", tokens)
            job.finish_external("length" if reason == "length" else "stop", tokens)
        except httpx.HTTPError as err:
            job.fail(f"the vLLM engine is unreachable ({err.__class__.__name__}); it is being restarted, retry shortly")
        except Exception as err:  # one request's failure, never the engine's
            log.exception("vLLM request failed")
            job.fail(f"generation failed: {err.__class__.__name__}: {err}")
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._in_flight -= 1
                self.last_batch_size = self._in_flight
            self.tokens_per_second = tokens / elapsed if elapsed > 0 else 0.0

    # --- the child process ---------------------------------------------------------------------------
    def _start(self) -> None:
        self.port = _free_port()
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        command = [self.settings.interpreter(), "-c", LAUNCHER, str(os.getpid()), "--model", self.folder,
                   "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", self.settings.dtype,
                   "--max-model-len", str(self.context), "--enable-lora", "--max-lora-rank", str(self.settings.max_lora_rank),
                   "--max-loras", str(max(1, self.max_adapters)), "--structured-outputs-config.backend", "guidance",
                   *self.settings.args]
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1"}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on a CPU; vLLM's default takes far more
        env.pop("PYTHONPATH", None)  # vLLM's environment, not ours
        self._log_path = Path(os.environ.get("TUNELOOP_HOME", Path.home() / ".tuneloop")) / "logs" / f"vllm-{self.port}.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as sink:
            try:
                self._process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as err:
                raise TuneloopError(f"cannot start vLLM with {command[0]} ({err}); set up its environment with `make vllm` "
                                    f"or pass --vllm-python") from None
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._log_path.read_text(errors="replace").strip().splitlines()[-8:]
                missing = any("No module named 'vllm'" in line or "No module named vllm" in line for line in tail)
                hint = " vLLM is not installed in that Python: run `make vllm` or pass --vllm-python" if missing else ""
                raise TuneloopError(f"vLLM exited with code {self._process.returncode} while starting.{hint} Its log "
                                    f"({self._log_path}) ends: " + " | ".join(tail))
            try:
                if self._http.get("/health", timeout=2).status_code == 200:
                    log.info("vLLM is ready on port %d for %s", self.port, self.ref)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self._terminate()
        raise TuneloopError(f"vLLM did not become ready within {self.settings.startup_timeout:g} s (log: {self._log_path}); "
                            f"raise the start-up timeout or check the log")

    def _ensure_running(self) -> None:
        if self.healthy:
            return
        with self._lock:
            if self.healthy:
                return
            if self.restarts >= 3:
                raise EngineUnavailable(f"the vLLM engine for {self.ref} has died {self.restarts + 1} times; see {self._log_path}")
            self.restarts += 1
            log.warning("vLLM for %s exited (code %s); restarting it", self.ref, self._process.poll() if self._process else None)
            adapters, self.adapters = list(self.adapters.values()), OrderedDict()
        try:
            self._start()
        except TuneloopError as err:
            raise EngineUnavailable(str(err)) from None
        for adapter in adapters:
            self.load_adapter(adapter)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return


def _check_adapter(adapter: AdapterRef, max_rank: int) -> None:
    if adapter.dora:
        raise TuneloopError(f"adapter {adapter.key} is DoRA, which vLLM does not serve; serve it on the default engine, "
                            f"or merge it (`tuneloop export`) and serve the merged model")
    config = json.loads((Path(adapter.path) / "adapter_config.json").read_text())
    if int(config.get("r", 0)) > max_rank:
        raise TuneloopError(f"adapter {adapter.key} has rank {config['r']}, above vLLM's --max-lora-rank {max_rank}; "
                            f"start the server with a larger max LoRA rank")


def _model_context(folder: Path) -> int:
    try:
        return int(json.loads((folder / "config.json").read_text()).get("max_position_embeddings") or 2048)
    except (OSError, ValueError):
        return 2048


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("message") or body.get("error", {}).get("message") or text)[:300]
    except (ValueError, AttributeError):
        return text[:300]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
