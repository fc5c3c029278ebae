"""SQLAlchemy-backed model registry: immutable numbered versions per model name, with lineage.

SQLite is the embedded default; any SQLAlchemy URL (e.g. PostgreSQL) works unchanged. Version
numbers are allocated inside the inserting transaction and guarded by a unique constraint, so two
writers racing for the same number retry instead of overwriting each other.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, UniqueConstraint, create_engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tuneloop.artifacts import tuneloop_home
from tuneloop.errors import TuneloopError


class Base(DeclarativeBase):
    pass


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
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=lambda: dt.datetime.now(dt.timezone.utc))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "ref": f"{self.name}:{self.version}",
            "artifact_path": self.artifact_path, "base_model": self.base_model, "method": self.method,
            "data_hash": self.data_hash, "train_config": self.train_config, "eval_results": self.eval_results,
            "task": self.task, "note": self.note, "created_at": self.created_at.isoformat(),
        }


def default_url() -> str:
    home = tuneloop_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'registry.db'}"


class Registry:
    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        # A generous SQLite busy timeout: concurrent writers wait for the lock instead of failing.
        connect_args = {"timeout": 30} if self.url.startswith("sqlite") else {}
        try:
            self.engine = create_engine(self.url, connect_args=connect_args)
            Base.metadata.create_all(self.engine)
        except Exception as err:  # bad URL, unreachable server, unwritable file
            raise TuneloopError(f"registry {self.url}: cannot open ({err.__class__.__name__}: {err})") from None

    def register(self, name: str, artifact_path: Path, base_model: str, method: str, *, data_hash: str | None = None,
                 train_config: dict | None = None, eval_results: dict | None = None, task: dict | None = None,
                 note: str = "") -> dict[str, Any]:
        """Add the next version of `name`; returns it as a dict."""
        for _ in range(20):
            with Session(self.engine) as session:
                latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
                row = ModelVersion(
                    name=name, version=(latest or 0) + 1, artifact_path=str(Path(artifact_path).resolve()),
                    base_model=base_model, method=method, data_hash=data_hash, train_config=train_config or {},
                    eval_results=eval_results or {}, task=task or {}, note=note,
                )
                session.add(row)
                try:
                    session.commit()
                except (IntegrityError, OperationalError):
                    session.rollback()  # another writer took this number (or held the lock): try the next
                    continue
                return row.to_dict()
        raise TuneloopError(f"registry {self.url}: could not allocate a version for '{name}' (too much contention)")

    def get(self, ref: str) -> dict[str, Any]:
        """`name` (latest version) or `name:version`."""
        name, _, version = ref.partition(":")
        with Session(self.engine) as session:
            query = select(ModelVersion).where(ModelVersion.name == name)
            if version:
                if not version.isdigit():
                    raise TuneloopError(f"'{ref}': a version is a number, like {name}:3")
                query = query.where(ModelVersion.version == int(version))
            row = session.scalars(query.order_by(ModelVersion.version.desc()).limit(1)).first()
            if row is None:
                known = ", ".join(m["name"] for m in self.models()) or "none yet"
                raise TuneloopError(f"registry has no model '{ref}' (registered: {known})")
            return row.to_dict()

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
            if name:
                query = query.where(ModelVersion.name == name)
            return [row.to_dict() for row in session.scalars(query)]

    def models(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(ModelVersion.name, func.max(ModelVersion.version), func.count()).group_by(ModelVersion.name)
            )
            return [{"name": n, "latest": latest, "versions": count} for n, latest, count in rows]
