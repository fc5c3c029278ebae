"""SQLAlchemy-backed model registry: immutable numbered versions per model name, aliases, lineage.

It lives in tuneloop's database (`tuneloop.db`: SQLite by default, any SQLAlchemy URL works unchanged,
schema kept by alembic). It indexes artifacts (train run folders); it does not own them. A reference
is `name` (latest version), `name:3`, or `name@alias`.

Every write is one transaction, retried when another writer wins a race: version numbers are
allocated inside the inserting transaction and guarded by a unique constraint; aliases are moved
optimistically (aliases.py). So concurrent writers, in several processes, never overwrite or lose an
entry. Deleted versions stay as tombstones, so a number is never reused (tables.py).
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tuneloop.db import Database, Raced
from tuneloop.db.base import utcnow
from tuneloop.errors import TuneloopError
from tuneloop.registry import aliases as alias_ops
from tuneloop.registry.tables import Alias, AliasEvent, ModelVersion

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as RegistryConfig.name; never ':' or '@'
_LIVE = ModelVersion.deleted_at.is_(None)


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`name` -> (name, None, None); `name:3` -> (name, 3, None); `name@alias` -> (name, None, alias)."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        alias_ops.check_alias_name(alias)
        return name, None, alias
    name, colon, version = ref.partition(":")
    if colon and not version.isdigit():
        raise TuneloopError(f"'{ref}': a version is a number, like {name}:3 (or name an alias: {name}@production)")
    return name, int(version) if colon else None, None


class Registry:
    def __init__(self, database: Database | str | None = None):
        """`database`: a SQLAlchemy URL (None: sqlite under TUNELOOP_HOME) or an open Database."""
        self.database = Database.of(database)
        self.url, self.engine = self.database.url, self.database.engine

    # --- versions --------------------------------------------------------------------------------
    def register(self, name: str, artifact_path: Path, base_model: str, method: str, *, data_hash: str | None = None,
                 train_config: dict | None = None, eval_results: dict | None = None, task: dict | None = None,
                 note: str = "") -> dict[str, Any]:
        """Add the next version of `name`; returns it as a dict."""
        if not NAME_PATTERN.fullmatch(name):
            raise TuneloopError(f"model name '{name}' is not valid: start with a letter or digit, then letters, "
                                f"digits, '.', '_' or '-'")

        def add(session: Session) -> dict[str, Any]:
            # Tombstones count: a deleted number is never handed out again.
            latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
            row = ModelVersion(
                name=name, version=(latest or 0) + 1, artifact_path=str(Path(artifact_path).resolve()),
                base_model=base_model, method=method, data_hash=data_hash, train_config=train_config or {},
                eval_results=eval_results or {}, task=task or {}, note=note, created_at=utcnow(),
            )
            session.add(row)
            session.flush()  # IntegrityError if another writer took this number: retried with the next
            return row.to_dict()

        return self.database.write(f"allocate a version for '{name}'", add)

    def resolve(self, ref: str) -> dict[str, Any]:
        """The version `ref` names now: `name` (latest), `name:3` or `name@alias`; a dict with its `aliases`."""
        name, version, alias = parse_ref(ref)
        with Session(self.engine) as session:
            if alias is not None:
                now = alias_ops.current(session, name, alias)
                if now is None:
                    self._require_model(session, name, ref)
                    raise alias_ops.unknown_alias(session, name, alias)
                version = now.version
            query = select(ModelVersion).where(ModelVersion.name == name, _LIVE)
            if version is not None:
                query = query.where(ModelVersion.version == version)
            row = session.scalars(query.order_by(ModelVersion.version.desc()).limit(1)).first()
            if row is None:
                self._require_model(session, name, ref)
                raise self._no_version(session, name, version)
            return row.to_dict(alias_ops.names_of(session, name, row.version))

    def get(self, ref: str) -> dict[str, Any]:
        """Same as resolve() (the older name)."""
        return self.resolve(ref)

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            query = select(ModelVersion).where(_LIVE).order_by(ModelVersion.name, ModelVersion.version)
            pointing: dict[tuple[str, int], list[str]] = defaultdict(list)
            for alias in self._alias_rows(session, name):
                pointing[alias.name, alias.version].append(alias.alias)
            if name:
                query = query.where(ModelVersion.name == name)
            return [row.to_dict(pointing[row.name, row.version]) for row in session.scalars(query)]

    def models(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.execute(select(ModelVersion.name, func.max(ModelVersion.version), func.count())
                                   .where(_LIVE).group_by(ModelVersion.name).order_by(ModelVersion.name))
            pointing: dict[str, dict[str, int]] = defaultdict(dict)
            for alias in self._alias_rows(session, None):
                pointing[alias.name][alias.alias] = alias.version
            return [{"name": n, "latest": latest, "versions": count, "aliases": pointing[n]} for n, latest, count in rows]

    def delete(self, ref: str, *, force: bool = False) -> dict[str, Any]:
        """Delete `name:N`, or every version of `name` (`name@alias` removes just the alias).

        Refuses while an alias points at a version being deleted, unless `force`, which removes those
        aliases too (logged as "delete" events). Returns {"deleted": [refs], "aliases_removed": [refs]}."""
        name, version, alias = parse_ref(ref)
        if alias is not None:
            self.remove_alias(name, alias, reason="deleted by reference")
            return {"deleted": [], "aliases_removed": [ref]}

        def tombstone(session: Session) -> dict[str, Any]:
            query = select(ModelVersion.id, ModelVersion.version).where(ModelVersion.name == name, _LIVE)
            if version is not None:
                query = query.where(ModelVersion.version == version)
            targets: dict[int, int] = dict(session.execute(query).all())  # id -> version
            if not targets:
                self._require_model(session, name, ref)
                raise self._no_version(session, name, version)
            marked = session.execute(update(ModelVersion).where(ModelVersion.id.in_(list(targets)), _LIVE)
                                     .values(deleted_at=utcnow()).execution_options(synchronize_session=False))
            if marked.rowcount != len(targets):
                raise Raced  # someone else deleted some of them meanwhile
            # Read after the write above, so an alias set concurrently is seen (or waits for us).
            doomed = session.execute(select(Alias.alias, Alias.version, Alias.event_id)
                                     .where(Alias.name == name, Alias.version.in_(list(targets.values())))).all()
            if doomed and not force:
                listed = ", ".join(f"{name}@{a.alias} -> {a.version}" for a in doomed)
                raise TuneloopError(f"cannot delete '{ref}': aliases point at it ({listed}); move them first "
                                    f"(`tuneloop registry alias {name} ALIAS VERSION`) or delete with --force")
            for a in doomed:
                alias_ops.move(session, name, a.alias, alias_ops.Current(a.version, a.event_id), None, "delete",
                               None, f"{name}:{a.version} deleted")
            return {"deleted": [f"{name}:{v}" for v in sorted(targets.values())],
                    "aliases_removed": [f"{name}@{a.alias}" for a in doomed]}

        return self.database.write(f"delete '{ref}'", tombstone)

    # --- aliases ---------------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int, *, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """Point `name@alias` at `name:version`; returns the logged event."""
        alias_ops.check_alias_name(alias)

        def point(session: Session) -> dict[str, Any]:
            event = alias_ops.move(session, name, alias, alias_ops.current(session, name, alias), version, "set", actor, reason)
            alias_ops.require_live_version(session, name, version, f"set {name}@{alias}")
            return event

        return self.database.write(f"set alias {name}@{alias}", point)

    def rollback(self, name: str, alias: str, *, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """Move `name@alias` back to the version it pointed at before its current one; returns the event."""
        alias_ops.check_alias_name(alias)
        return self.database.write(f"roll back {name}@{alias}", lambda s: alias_ops.rollback(s, name, alias, actor, reason))

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """Remove `name@alias` (its versions stay); returns the logged event."""
        alias_ops.check_alias_name(alias)

        def remove(session: Session) -> dict[str, Any]:
            now = alias_ops.current(session, name, alias)
            if now is None:
                self._require_model(session, name, f"{name}@{alias}")
                raise alias_ops.unknown_alias(session, name, alias)
            return alias_ops.move(session, name, alias, now, None, "delete", actor, reason)

        return self.database.write(f"remove alias {name}@{alias}", remove)

    def aliases(self, name: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [{"name": a.name, "alias": a.alias, "version": a.version} for a in self._alias_rows(session, name)]

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias events of `name` (or of one alias), oldest first."""
        with Session(self.engine) as session:
            query = select(AliasEvent).where(AliasEvent.name == name).order_by(AliasEvent.id)
            if alias is not None:
                query = query.where(AliasEvent.alias == alias)
            events = [event.to_dict() for event in session.scalars(query)]
            if not events and not session.scalar(select(func.count()).where(ModelVersion.name == name)):
                self._require_model(session, name, name)
            return events

    # --- helpers ---------------------------------------------------------------------------------
    def _alias_rows(self, session: Session, name: str | None) -> list[Alias]:
        query = select(Alias).order_by(Alias.name, Alias.alias)
        return list(session.scalars(query.where(Alias.name == name) if name else query))

    def _require_model(self, session: Session, name: str, ref: str) -> None:
        if session.scalar(select(func.count()).where(ModelVersion.name == name, _LIVE)) == 0:
            known = list(session.scalars(select(ModelVersion.name).where(_LIVE).distinct().order_by(ModelVersion.name)))
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TuneloopError(f"registry has no model '{ref}' (registered: {', '.join(known) or 'none yet'}){hint}")

    def _no_version(self, session: Session, name: str, version: int | None) -> TuneloopError:
        deleted = session.scalar(select(ModelVersion.deleted_at).where(ModelVersion.name == name, ModelVersion.version == version))
        live = session.scalars(select(ModelVersion.version).where(ModelVersion.name == name, _LIVE).order_by(ModelVersion.version))
        state = "was deleted" if deleted else "does not exist"
        return TuneloopError(f"'{name}:{version}' {state} (versions of {name}: {', '.join(map(str, live))})")
