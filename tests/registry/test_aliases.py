"""Aliases: moves with an audit log, stack rollback, name@alias references, deletes, concurrent writers; the request log."""

import datetime as dt
import itertools
import multiprocessing as mp

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.registry.store import Registry


@pytest.fixture
def registry(tmp_path) -> Registry:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    for _ in range(4):
        registry.register("support", tmp_path, "base", "lora")
    return registry


def test_set_and_move_alias_is_logged(registry):
    first = registry.set_alias("support", "production", 1, actor="ana", reason="launch")
    registry.set_alias("support", "production", 3, actor="ben")
    assert (first["from_version"], first["to_version"], first["action"]) == (None, 1, "set")
    assert registry.aliases() == [{"name": "support", "alias": "production", "version": 3}]
    assert registry.get("support@production")["version"] == 3
    assert registry.get("support:3")["aliases"] == ["production"] and registry.get("support:1")["aliases"] == []
    history = registry.history("support", "production")
    assert [(e["from_version"], e["to_version"], e["actor"], e["reason"]) for e in history] == [(None, 1, "ana", "launch"), (1, 3, "ben", "")]
    assert dt.datetime.fromisoformat(history[0]["at"]).tzinfo is not None
    assert history[0]["at"] <= history[1]["at"]


def test_alias_needs_a_live_version_and_a_valid_name(registry):
    with pytest.raises(TuneloopError, match="'support' has no version 9"):
        registry.set_alias("support", "production", 9)
    for bad in ("123", "pro duction", "a:b", ""):
        with pytest.raises(TuneloopError, match="is not valid"):
            registry.set_alias("support", bad, 1)
    assert registry.aliases() == [] and registry.history("support") == []


def test_rollback_walks_back_one_step_at_a_time(registry):
    for version in (1, 2, 3):
        registry.set_alias("support", "production", version)
    back = registry.rollback("support", "production", actor="ops", reason="bad outputs")
    assert (back["action"], back["from_version"], back["to_version"], back["actor"]) == ("rollback", 3, 2, "ops")
    assert registry.rollback("support", "production")["to_version"] == 1  # twice: not back to 3
    assert registry.get("support@production")["version"] == 1
    with pytest.raises(TuneloopError, match="alias 'production' of 'support' has no earlier version to roll back to"):
        registry.rollback("support", "production")
    # A set after rollbacks pushes again: a rollback now undoes that set.
    registry.set_alias("support", "production", 4)
    assert registry.rollback("support", "production")["to_version"] == 1
    assert [e["action"] for e in registry.history("support")] == ["set"] * 3 + ["rollback"] * 2 + ["set", "rollback"]


def test_rollback_needs_an_earlier_version(registry):
    registry.set_alias("support", "production", 2)
    registry.set_alias("support", "production", 2)  # re-setting the same version is logged, not a step
    with pytest.raises(TuneloopError, match="no earlier version to roll back to"):
        registry.rollback("support", "production")
    with pytest.raises(TuneloopError, match="has no alias 'staging'"):
        registry.rollback("support", "staging")


def test_removed_alias_starts_a_fresh_stack(registry):
    registry.set_alias("support", "canary", 1)
    registry.set_alias("support", "canary", 2)
    registry.remove_alias("support", "canary", reason="done")
    assert registry.aliases("support") == []
    registry.set_alias("support", "canary", 3)
    with pytest.raises(TuneloopError, match="no earlier version"):
        registry.rollback("support", "canary")
    assert [e["action"] for e in registry.history("support", "canary")] == ["set", "set", "delete", "set"]


def test_alias_references_and_unknown_alias(registry):
    registry.set_alias("support", "production", 2)
    registry.set_alias("support", "staging", 4)
    assert registry.resolve("support@staging")["ref"] == "support:4"
    assert registry.resolve("support")["version"] == 4 and registry.resolve("support:1")["version"] == 1
    with pytest.raises(TuneloopError, match=r"no alias 'prod' \(its aliases: production, staging\)"):
        registry.get("support@prod")
    with pytest.raises(TuneloopError, match="no model 'nope@production'"):
        registry.get("nope@production")
    assert registry.models()[0]["aliases"] == {"production": 2, "staging": 4}


def test_delete_refuses_aliased_versions_unless_forced(registry):
    registry.set_alias("support", "production", 4)
    with pytest.raises(TuneloopError, match=r"aliases point at it \(support@production -> 4\).*--force"):
        registry.delete("support:4")
    assert registry.get("support")["version"] == 4
    assert registry.delete("support:4", force=True) == {"deleted": ["support:4"], "aliases_removed": ["support@production"]}
    assert registry.aliases() == [] and registry.history("support")[-1]["action"] == "delete"
    with pytest.raises(TuneloopError, match="'support:4' was deleted"):
        registry.get("support:4")
    assert registry.get("support")["version"] == 3
    # Numbers are never reused: not after deleting the latest, not after deleting the whole model.
    assert registry.register("support", ".", "base", "lora")["version"] == 5
    assert registry.delete("support")["deleted"] == ["support:1", "support:2", "support:3", "support:5"]
    assert registry.versions("support") == [] and registry.models() == []
    assert registry.register("support", ".", "base", "lora")["version"] == 6


def test_delete_by_alias_removes_only_the_alias(registry):
    registry.set_alias("support", "canary", 2)
    assert registry.delete("support@canary") == {"deleted": [], "aliases_removed": ["support@canary"]}
    assert [v["version"] for v in registry.versions("support")] == [1, 2, 3, 4]


def test_rollback_to_a_deleted_version_is_refused(registry):
    registry.set_alias("support", "production", 1)
    registry.set_alias("support", "production", 2)
    registry.delete("support:1")
    with pytest.raises(TuneloopError, match="support:1 was deleted"):
        registry.rollback("support", "production")
    assert registry.get("support@production")["version"] == 2


def _writer(url: str, worker: int, rounds: int, start) -> None:
    import alembic.command  # noqa: F401  (imported now, so that both processes reach the migration together)

    start.wait(60)  # both processes open the fresh database, then race, from the same moment
    try:
        registry = Registry(url)
    finally:
        start.wait(60)
    for i in range(rounds):
        version = registry.register("race", ".", "base", "lora")["version"]
        registry.set_alias("race", "production", version, actor=f"w{worker}", reason=str(i))
        if i % 3 == 2:
            registry.rollback("race", "production", actor=f"w{worker}")


def test_two_processes_migrate_register_and_move_aliases_losing_nothing(tmp_path):
    """Also the concurrency test of migrations: both processes open a database that does not exist yet."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    rounds, spawn = 12, mp.get_context("spawn")
    start = spawn.Barrier(2)
    workers = [spawn.Process(target=_writer, args=(url, w, rounds, start)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    registry = Registry(url)
    assert [v["version"] for v in registry.versions("race")] == list(range(1, 2 * rounds + 1))
    history = registry.history("race", "production")
    assert sorted((e["actor"], e["reason"]) for e in history if e["action"] == "set") == \
        sorted((f"w{w}", str(i)) for w in range(2) for i in range(rounds))
    assert sum(e["action"] == "rollback" for e in history) == 2 * (rounds // 3)
    # Every move starts where the one before it ended: no move was based on a stale read.
    assert all(later["from_version"] == earlier["to_version"] for earlier, later in itertools.pairwise(history))
    assert registry.get("race@production")["version"] == history[-1]["to_version"]
