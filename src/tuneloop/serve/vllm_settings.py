"""How tuneloop starts vLLM (serve/vllm.py): its interpreter, dtype, LoRA rank and context, extra arguments."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class VllmSettings:
    python: str | None = None  # vLLM's interpreter; None: $TUNELOOP_VLLM_PYTHON, else .venv-vllm, else this one
    args: list[str] = field(default_factory=list)  # more arguments for vLLM's server, e.g. --tensor-parallel-size 2
    dtype: str = "auto"  # "float32" keeps CPU answers equal to the default engine's
    max_lora_rank: int = 64
    max_model_len: int | None = None  # None: the model's context, capped at 4096
    startup_timeout: float = 900.0  # seconds; vLLM compiles and profiles at start (minutes on a small CPU)

    def interpreter(self) -> str:
        if self.python:
            return self.python
        if os.environ.get("TUNELOOP_VLLM_PYTHON"):
            return os.environ["TUNELOOP_VLLM_PYTHON"]
        # `make vllm` makes .venv-vllm beside .venv: look in the working folder, then in this checkout.
        for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
            local = root / ".venv-vllm" / "bin" / "python"
            if local.is_file():
                return str(local.absolute())  # not resolve(): the venv is the symlink, not its target
        return sys.executable
