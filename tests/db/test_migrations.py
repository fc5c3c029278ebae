"""Schema migrations: they build what the ORM declares, upgrade pre-migration databases, go down and
up again, are skipped at head, and refuse a schema from a newer tuneloop."""

import sqlite3

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import tuneloop.db.requestlog  # noqa: F401  (each owner's tables register on the shared base)
import tuneloop.jobs.tables  # noqa: F401
import tuneloop.registry.tables  # noqa: F401
from tuneloop.db import migrate
from tuneloop.db.base import Base
from tuneloop.errors import TuneloopError
from tuneloop.registry.store import Registry

# The table exactly as tuneloop created it before migrations existed (Base.metadata.create_all).
OLD_SCHEMA = """
CREATE TABLE model_versions (
    id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, version INTEGER NOT NULL, artifact_path TEXT NOT NULL,
    base_model VARCHAR(500) NOT NULL, method VARCHAR(50) NOT NULL, data_hash VARCHAR(64), train_config JSON NOT NULL,
    eval_results JSON NOT NULL, task JSON NOT NULL, note TEXT NOT NULL, created_at DATETIME NOT NULL,
    PRIMARY KEY (id), UNIQUE (name, version)
);
CREATE INDEX ix_model_versions_name ON model_versions (name);
INSERT INTO model_versions VALUES (1, 'old', 1, '/runs/old/train', 'base', 'lora', 'abc', '{}', '{"x": 1}', '{}', '',
                                   '2024-05-01 10:00:00.000000');
"""


def _revisions(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]


def test_migrations_build_what_the_tables_declare(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    with registry.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    script = ScriptDirectory.from_config(migrate.alembic_config(registry.engine))
    assert script.get_heads() == [migrate.HEAD]
    assert _revisions(tmp_path / "r.db") == [migrate.HEAD]


def test_old_database_is_stamped_and_upgraded(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    registry = Registry(f"sqlite:///{path}")
    assert _revisions(path) == [migrate.HEAD]
    old = registry.get("old")
    assert (old["version"], old["data_hash"], old["eval_results"], old["aliases"]) == (1, "abc", {"x": 1}, [])
    assert registry.register("old", tmp_path, "base", "lora")["version"] == 2
    registry.set_alias("old", "production", 1)
    assert registry.get("old@production")["artifact_path"] == "/runs/old/train"


def test_downgrade_to_the_first_revision_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    registry = Registry(url)
    registry.register("m", tmp_path, "base", "lora")
    with registry.engine.connect() as connection:
        command.downgrade(migrate.alembic_config(registry.engine, connection), "0001")
        connection.commit()
        assert set(inspect(connection).get_table_names()) == {"model_versions", "alembic_version"}
    assert Registry(url).get("m")["version"] == 1


def test_opening_at_head_skips_alembic(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url)

    def refuse(*args, **kwargs):
        raise AssertionError("upgrade ran on a database already at head")

    monkeypatch.setattr(command, "upgrade", refuse)
    monkeypatch.setattr(command, "stamp", refuse)
    Registry(url).register("m", tmp_path, "base", "lora")


def test_database_from_a_newer_tuneloop_is_a_clear_error(tmp_path):
    path = tmp_path / "r.db"
    Registry(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(TuneloopError, match="newer tuneloop"):
        Registry(f"sqlite:///{path}")


# Two processes opening a fresh database at once (the migration lock): see
# test_aliases.py::test_two_processes_migrate_register_and_move_aliases_losing_nothing.
