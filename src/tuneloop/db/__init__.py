"""tuneloop's database: one SQLAlchemy engine per URL, its schema kept by alembic, and safe concurrent writes.

SQLite under TUNELOOP_HOME is the embedded default; any SQLAlchemy URL (e.g. PostgreSQL) works the same.
The registry, the jobs API and the request log each keep their own tables in it and open it through
`Database`; this package also owns the request log and feedback tables (`requestlog.py`), which the
serving stage writes and the monitor reads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tuneloop.artifacts import tuneloop_home
from tuneloop.db import migrate
from tuneloop.errors import TuneloopError

T = TypeVar("T")


class Raced(Exception):
    """A writer found the data changed since it read it (optimistic locking): the transaction starts over."""


def default_url() -> str:
    home = tuneloop_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'registry.db'}"


class Database:
    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        # A generous SQLite busy timeout: concurrent writers wait for the lock instead of failing.
        connect_args = {"timeout": 30} if self.url.startswith("sqlite") else {}
        try:
            self.engine = create_engine(self.url, connect_args=connect_args)
            migrate.upgrade(self.engine)
        except TuneloopError:
            raise
        except Exception as err:  # bad URL, unreachable server, unwritable file
            raise TuneloopError(f"registry {self.url}: cannot open ({err.__class__.__name__}: {err})") from None

    @classmethod
    def of(cls, where: Database | str | None) -> Database:
        """`where` if it is a Database already, else the database at that URL (None: the default)."""
        return where if isinstance(where, Database) else cls(where)

    def write(self, what: str, work: Callable[[Session], T],
              retry_on: tuple[type[Exception], ...] = (IntegrityError, OperationalError, Raced)) -> T:
        """Run `work` in a transaction and commit; start over when another writer won a race."""
        last: Exception | None = None
        for attempt in range(20):
            with Session(self.engine) as session:
                try:
                    result = work(session)
                    session.commit()
                    return result
                except retry_on as err:  # TuneloopError and anything else propagate (and roll back)
                    session.rollback()
                    last = err
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # jitter, so racers stop colliding
        detail = str(last).splitlines()[0] if str(last) else ""
        raise TuneloopError(f"registry {self.url}: could not {what}: other writers kept winning "
                            f"({last.__class__.__name__} {detail}); try again")
