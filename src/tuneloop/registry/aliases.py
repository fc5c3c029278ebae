"""Aliases (`support@production`): movable names for versions, every move kept in an audit log.

These functions work inside a caller's session (Registry wraps them in retried transactions). A move
is optimistic: it rewrites the alias row only if the row still carries the event id read before, so
two writers racing on one alias never lose a move; the loser gets `Raced` and is retried.

Rollback replays the alias's events as a stack of versions: a set pushes (unless it re-sets the
version already on top), a rollback pops, a delete clears. Rolling back moves the alias to the
version below the top: one step back per rollback, however the alias got where it is.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tuneloop.db import Raced
from tuneloop.db.base import utcnow
from tuneloop.errors import TuneloopError
from tuneloop.registry.tables import Alias, AliasEvent, ModelVersion

ALIAS_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,100}")


class Current(NamedTuple):
    version: int
    event_id: int


def check_alias_name(alias: str) -> None:
    if not ALIAS_PATTERN.fullmatch(alias) or alias.isdigit():
        raise TuneloopError(f"alias '{alias}' is not valid: use up to 100 letters, digits, '-' and '_', not all digits "
                            f"(e.g. production, canary-2)")


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (some containers)
        return "unknown"


def current(session: Session, name: str, alias: str) -> Current | None:
    row = session.execute(select(Alias.version, Alias.event_id).where(Alias.name == name, Alias.alias == alias)).first()
    return Current(*row) if row else None


def names(session: Session, name: str) -> list[str]:
    return list(session.scalars(select(Alias.alias).where(Alias.name == name).order_by(Alias.alias)))


def names_of(session: Session, name: str, version: int) -> list[str]:
    """The aliases pointing at `name:version`."""
    return list(session.scalars(select(Alias.alias).where(Alias.name == name, Alias.version == version).order_by(Alias.alias)))


def unknown_alias(session: Session, name: str, alias: str) -> TuneloopError:
    known = ", ".join(names(session, name)) or "none yet"
    return TuneloopError(f"model '{name}' has no alias '{alias}' (its aliases: {known}); "
                         f"set one with `tuneloop registry alias {name} {alias} VERSION`")


def move(session: Session, name: str, alias: str, now: Current | None, to_version: int | None, action: str,
         actor: str | None, reason: str) -> dict[str, Any]:
    """Point `alias` at `to_version` (None removes it), given its state `now` as read in this
    transaction, and log the event. Raises Raced if another writer moved it since."""
    event = AliasEvent(name=name, alias=alias, from_version=now.version if now else None, to_version=to_version,
                       action=action, actor=actor or default_actor(), reason=reason, at=utcnow())
    session.add(event)
    session.flush()  # assigns event.id (and, on SQLite, takes the write lock)
    if now is None:
        if to_version is not None:  # IntegrityError if another writer created the alias first
            session.add(Alias(name=name, alias=alias, version=to_version, event_id=event.id))
            session.flush()
    else:
        same = (Alias.name == name, Alias.alias == alias, Alias.event_id == now.event_id)
        change = delete(Alias) if to_version is None else update(Alias).values(version=to_version, event_id=event.id)
        if session.execute(change.where(*same).execution_options(synchronize_session=False)).rowcount != 1:
            raise Raced
    return event.to_dict()


def require_live_version(session: Session, name: str, version: int, action: str) -> None:
    """Checked after the alias write, so a concurrent delete of the version cannot slip between."""
    row = session.execute(select(ModelVersion.deleted_at).where(ModelVersion.name == name, ModelVersion.version == version)).first()
    if row is None:
        live = session.scalars(select(ModelVersion.version).where(ModelVersion.name == name, ModelVersion.deleted_at.is_(None))
                               .order_by(ModelVersion.version))
        raise TuneloopError(f"cannot {action}: '{name}' has no version {version} "
                            f"(its versions: {', '.join(map(str, live)) or 'none'})")
    if row.deleted_at is not None:
        raise TuneloopError(f"cannot {action}: {name}:{version} was deleted; point the alias at a live version "
                            f"with `tuneloop registry alias {name} ALIAS VERSION`")


def version_stack(events: Iterable[AliasEvent]) -> list[int]:
    """The versions an alias can roll back through, oldest first; its current version is last."""
    stack: list[int] = []
    for event in events:
        if event.action == "set" and (not stack or stack[-1] != event.to_version):
            stack.append(event.to_version)
        elif event.action == "rollback" and stack:
            stack.pop()
        elif event.action == "delete":
            stack.clear()
    return stack


def rollback(session: Session, name: str, alias: str, actor: str | None, reason: str) -> dict[str, Any]:
    now = current(session, name, alias)
    if now is None:
        raise unknown_alias(session, name, alias)
    events = session.scalars(select(AliasEvent).where(AliasEvent.name == name, AliasEvent.alias == alias,
                                                      AliasEvent.id <= now.event_id).order_by(AliasEvent.id))
    stack = version_stack(events)
    if len(stack) < 2:
        raise TuneloopError(f"alias '{alias}' of '{name}' has no earlier version to roll back to")
    event = move(session, name, alias, now, stack[-2], "rollback", actor, reason)
    require_live_version(session, name, stack[-2], f"roll {name}@{alias} back to {name}:{stack[-2]}")
    return event
