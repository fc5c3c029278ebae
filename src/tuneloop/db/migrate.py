"""Bring tuneloop's database to the newest schema with alembic: quickly, and safely under concurrency.

Opening the database happens in every CLI command, so the common case (already at head) costs one
query and never imports alembic. Otherwise the upgrade runs in one transaction that first takes a
lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two processes opening a fresh
database at once migrate it once: the second waits, then finds it at head. A database created before
migrations existed (model_versions but no alembic_version) is stamped at 0001 and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from tuneloop.errors import TuneloopError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions; a test checks that the two agree.
HEAD = "0006"
_PG_LOCK_KEY = 7_316_221_001  # any constant: the advisory lock id tuneloop's migrations take


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no alembic_version table yet (a new or pre-migration database)
            return None


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind `engine` to HEAD (a no-op when it is there already)."""
    if current_revision(engine) == HEAD:
        return
    from alembic import command
    from alembic.util import CommandError

    with engine.connect() as connection:
        _lock(connection)
        config = alembic_config(engine, connection)
        tables = inspect(connection)
        try:
            if tables.has_table("model_versions") and not tables.has_table("alembic_version"):
                command.stamp(config, "0001")  # made by tuneloop before migrations existed: that is schema 0001
            command.upgrade(config, "head")
        except CommandError as err:  # e.g. a revision from a newer tuneloop
            raise TuneloopError(f"registry {engine.url!r}: cannot upgrade its schema ({err}); "
                                f"is it from a newer tuneloop? Upgrade tuneloop to open it") from None
        connection.commit()


def _lock(connection: Connection) -> None:
    """Hold the database's write lock (SQLite) or tuneloop's advisory lock (PostgreSQL) until commit."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # pysqlite opens transactions lazily, and only for DML: begin one ourselves, taking the write
        # lock now, so that the DDL below is atomic and other openers wait for it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def alembic_config(engine: Engine, connection: Connection | None = None) -> Config:
    """An alembic Config for this package's migrations; env.py migrates on `connection` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # configparser treats % as interpolation (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config
