"""Registry: numbered versions, lookups, lineage from manifests, and concurrent writers."""

import multiprocessing as mp

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.registry.store import Registry


def test_versions_increment_per_name(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    first = registry.register("triage", tmp_path, "base", "lora", data_hash="abc", eval_results={"x": 1})
    second = registry.register("triage", tmp_path, "base", "lora")
    other = registry.register("summaries", tmp_path, "base", "lora")
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert registry.get("triage")["version"] == 2
    assert registry.get("triage:1")["data_hash"] == "abc" and registry.get("triage:1")["eval_results"] == {"x": 1}
    assert {m["name"]: m["latest"] for m in registry.models()} == {"triage": 2, "summaries": 1}


def test_unknown_model_and_bad_version(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(TuneloopError, match="no model 'nope'"):
        registry.get("nope")
    registry.register("m", tmp_path, "base", "lora")
    with pytest.raises(TuneloopError, match="a version is a number"):
        registry.get("m:latest")


def test_default_url_lives_under_tuneloop_home(tmp_path):
    assert Registry().url == f"sqlite:///{tmp_path / 'home' / 'registry.db'}"


def _register_many(url: str, path: str, count: int) -> None:
    registry = Registry(url)
    for _ in range(count):
        registry.register("race", path, "base", "lora")


def test_concurrent_writers_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url)
    workers = [mp.get_context("spawn").Process(target=_register_many, args=(url, str(tmp_path), 10)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert [v["version"] for v in Registry(url).versions("race")] == list(range(1, 21))
