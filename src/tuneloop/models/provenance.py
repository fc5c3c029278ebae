"""Where an adapter's base model comes from, said so that another machine understands it.

peft, vLLM and inference providers find an adapter's base through `base_model_name_or_path` in
adapter_config.json. A folder on this machine means nothing elsewhere, so the adapter names the base's public
id (its Hugging Face hub id), and the train run's manifest keeps what only this machine knows: the reference
the config gave, the folder it resolved to and a sha256 of that folder.

    adapter_config.json   "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"
    manifest.json         "model": {"name": "smollm2-135m-instruct", "hub_id": "HuggingFaceTB/...",
                                    "local_path": "~/.cache/tuneloop/models/smollm2-135m-instruct", "sha256": "..."}

Loading resolves either: the manifest's reference where it still names a model here, else the hub id (the
embedded model stands in for its original when the Hugging Face cache does not hold it). The embedded weights
are SmolLM2-135M-Instruct's Q4_1 GGUF dequantized, so on the hub's own fp32 weights an adapter trained here
gives close, not necessarily identical, answers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tuneloop.artifacts import sha256_dir, write_json
from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import EMBEDDED, check_model, resolve_model

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
_warned: set[str] = set()


def hub_id(ref: str | Path, given: str | None = None) -> str:
    """The base's public id: `given` (model.hub_id), the embedded model's original, a hub id itself, or the id in a
    Hugging Face cache path. A local folder with none of these keeps its absolute path, with a warning."""
    if given:
        return given
    text = str(ref)
    if text.lower() in EMBEDDED:
        return EMBEDDED[text.lower()].hub_id
    path = Path(text).expanduser()
    if not path.exists():
        return text  # a hub id (check_model has refused anything else already)
    for part in path.resolve().parts:  # .../hub/models--org--name/snapshots/<revision>
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--"):].replace("--", "/", 1)
    if text not in _warned:
        _warned.add(text)
        log.warning("model '%s' is a local folder with no public id: its adapters name that path, which loads on this "
                    "machine only; set model.hub_id to the original's Hugging Face id", text)
    return str(path.resolve())


def base_record(ref: str | Path, given: str | None = None) -> dict:
    """What a train manifest records about its base: the reference, the public id, the local folder and its sha256."""
    record = {"name": str(ref), "hub_id": hub_id(ref, given)}
    local = Path(resolve_model(ref))
    if local.is_dir():
        record.update(local_path=str(local.resolve()), sha256=sha256_dir(local))
    return record


def stamp_adapter(folder: Path, public_id: str) -> None:
    """Point a saved PEFT adapter (and the model card peft writes beside it) at the base's public id."""
    path = Path(folder) / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    local = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = public_id
    write_json(path, config)
    card = Path(folder) / "README.md"
    if local and local != public_id and card.is_file():
        card.write_text(card.read_text().replace(local, public_id))  # base_model: and the base_model:adapter: tag


def loadable_base(model: dict) -> str:
    """The base to load for a train manifest's `model` record: its reference where that still names a model here
    (the same machine, or an embedded name), else its public id."""
    try:
        check_model(model["name"])
        return model["name"]
    except TuneloopError:
        if not model.get("hub_id"):
            raise
        return for_hub_id(model["hub_id"])


def adapter_base(folder: Path) -> str | None:
    """The base an adapter folder names (base_model_name_or_path), as tuneloop loads it; None if it names none."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    named = json.loads(path.read_text()).get("base_model_name_or_path")
    return for_hub_id(named) if named else None


def for_hub_id(public_id: str) -> str:
    """A public id as tuneloop loads it: from the Hugging Face cache when it holds the model, else the embedded model
    that is that id's original, else the id unchanged (transformers resolves it)."""
    embedded = next((name for name, item in EMBEDDED.items() if item.hub_id == public_id), None)
    if embedded is None:
        return public_id
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(public_id, "config.json")
    return public_id if isinstance(cached, str) else embedded
