"""Run directories and manifests: how stages hand off to each other on disk.

Every stage writes a directory holding its outputs and a `manifest.json` recording the stage's
config, the sha256 of each input, library versions, seed, wall time and the path of the upstream
manifest. Lineage is the chain of manifests.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from tuneloop.errors import TuneloopError
from tuneloop.layout import MANIFEST

_LIBRARIES = ("tuneloop", "torch", "transformers", "peft", "accelerate", "tokenizers", "pydantic")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_dir(path: Path) -> str:
    """One hash over every file of a directory (relative names and contents), for model folders."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def umask() -> int:
    """This process's umask, read without changing it (os.umask can only be read by setting it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode(path: Path) -> Path:
    """Give a file or folder made by tempfile (0600 / 0700) the mode `open` and `mkdir` would: 0666 / 0777 less the umask."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask())
    return Path(path)


def normal_modes(folder: Path) -> Path:
    """normal_mode for a folder and all it holds (safetensors writes its files 0600)."""
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            normal_mode(path)
    return Path(folder)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    normal_mode(Path(tmp))
    with os.fdopen(fd, "w") as handle:
        json.dump(obj, handle, indent=2, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict]) -> Path:
    """Write rows (dicts; keys outside `columns` are left out) as CSV with a header, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def jsonl_objects(path: Path, each: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error naming
    `path:line` and saying that each line must be `each` (e.g. "one request record")."""
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TuneloopError(f"{path}:{number}: not UTF-8 text; save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise TuneloopError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}); each line must be {each}") from None
            if not isinstance(value, dict):
                raise TuneloopError(f"{path}:{number}: a {type(value).__name__}, not a JSON object; each line must be {each}")
            yield number, value


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise TuneloopError(f"{path}: file not found")
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_manifest(
    out_dir: Path,
    stage: str,
    config: BaseModel | dict[str, Any],
    inputs: dict[str, Path],
    outputs: list[Path] | None = None,
    seed: int | None = None,
    started: float | None = None,
    parent: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record what a stage did; `parent` is the upstream stage's directory (or its manifest)."""
    if isinstance(parent, Path) and parent.is_dir():
        parent = parent / MANIFEST
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.model_dump(mode="json") if isinstance(config, BaseModel) else config,
        "inputs": {name: {"path": str(p), "sha256": _hash(p)} for name, p in inputs.items()},
        "outputs": {str(p.relative_to(out_dir)): _hash(p) for p in outputs or []},
        "libraries": library_versions(),
        "seed": seed,
        "wall_s": round(time.time() - started, 3) if started else None,
        "parent": str(parent) if parent else None,
        **(extra or {}),
    }
    path = out_dir / MANIFEST
    write_json(path, manifest)
    return path


def manifest_task(data_dir: Path) -> dict | None:
    """The task (system prompt, schema) a data folder's manifest carries forward, so serving can reproduce the
    training prompts; None when it has none."""
    try:
        return read_manifest(data_dir).get("task")
    except TuneloopError:
        return None


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not path.is_file():
        raise TuneloopError(f"{run_dir}: no {MANIFEST} here; is this a tuneloop stage directory?")
    return json.loads(path.read_text())


def new_run_dir(root: Path, name: str) -> Path:
    """A fresh, timestamped directory under `root` (never reuses an existing one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        run = root / (f"{name}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            run.mkdir(parents=True)
            return run
        except FileExistsError:
            continue
    raise TuneloopError(f"{root}: could not create a new run directory")


def tuneloop_home() -> Path:
    """Where the registry database lives by default ($TUNELOOP_HOME, else ~/.tuneloop)."""
    return Path(os.environ.get("TUNELOOP_HOME", Path.home() / ".tuneloop"))


def cache_dir() -> Path:
    """Where converted models are cached ($TUNELOOP_CACHE, else ~/.cache/tuneloop)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tuneloop"
    return Path(os.environ.get("TUNELOOP_CACHE", default))


def _hash(path: Path) -> str:
    return sha256_dir(path) if path.is_dir() else sha256_file(path)


@contextmanager
def exclusive(lock_file: Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (flock: released by the OS when the holder dies, however it dies).

    Two writers of one run folder would interleave their files; the second waits up to `wait` seconds for the
    first to let go, then gives up with an error naming the holder."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise TuneloopError(f"{lock_file.parent}: {what} is already being written by {holder}; wait for it "
                                        f"to finish (or stop it), or write to another folder") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock
