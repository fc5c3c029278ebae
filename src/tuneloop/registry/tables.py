"""The registry's tables: model versions and aliases with their audit log (SQLAlchemy ORM classes on the
shared base; the alembic migrations in `tuneloop/db/migrations/` create them).

A change here needs a new migration (tests/db/test_migrations.py checks that the two agree).

Deleted versions are kept as tombstones (`deleted_at` set) rather than removed: every query hides
them, but they keep their number, so `max(version) + 1` never hands a deleted number out again and
the lineage of anything derived from them stays readable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tuneloop.db.base import Base, as_utc, utcnow


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(50))
    data_hash: Mapped[str | None] = mapped_column(String(64))
    train_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    eval_results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self, aliases: list[str] | None = None) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "ref": f"{self.name}:{self.version}",
            "aliases": sorted(aliases or []),
            "artifact_path": self.artifact_path, "base_model": self.base_model, "method": self.method,
            "data_hash": self.data_hash, "train_config": self.train_config, "eval_results": self.eval_results,
            "task": self.task, "note": self.note, "created_at": as_utc(self.created_at).isoformat(),
        }


class Alias(Base):
    """A movable name for one version (`support@production`). `event_id` is the last event that moved
    it: writers update the row only if it is unchanged since they read it (optimistic locking)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("name", "alias", name="uq_aliases_name_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[int] = mapped_column(Integer)


class AliasEvent(Base):
    """The audit log of alias moves; rollback replays it (see aliases.version_stack)."""

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_name_alias", "name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))  # set | rollback | delete
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "alias": self.alias, "action": self.action, "from_version": self.from_version,
            "to_version": self.to_version, "actor": self.actor, "reason": self.reason, "at": as_utc(self.at).isoformat(),
        }
