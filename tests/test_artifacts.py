"""Manifests record hashes, versions and lineage; JSON writes are atomic; run dirs never collide."""

import hashlib
import json

from tuneloop.artifacts import new_run_dir, read_manifest, write_json, write_manifest
from tuneloop.config import DataConfig


def test_manifest_records_inputs_outputs_and_parent(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"a": 1}\n')
    upstream = tmp_path / "up"
    write_manifest(upstream, "data", {"k": 1}, inputs={})
    out = tmp_path / "stage"
    out.mkdir()
    (out / "result.txt").write_text("hello")
    write_manifest(out, "train", DataConfig(seed=3), inputs={"train": source}, outputs=[out / "result.txt"],
                   seed=3, started=0.0, parent=upstream)
    manifest = read_manifest(out)
    assert manifest["stage"] == "train"
    assert manifest["inputs"]["train"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["outputs"]["result.txt"] == hashlib.sha256(b"hello").hexdigest()
    assert manifest["config"]["seed"] == 3 and manifest["seed"] == 3
    assert manifest["parent"] == str(upstream / "manifest.json")
    assert "torch" in manifest["libraries"] and "transformers" in manifest["libraries"]


def test_write_json_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_new_run_dirs_are_distinct(tmp_path):
    first, second = new_run_dir(tmp_path, "run"), new_run_dir(tmp_path, "run")
    assert first != second and first.is_dir() and second.is_dir()
