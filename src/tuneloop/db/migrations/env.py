"""Alembic environment for tuneloop's database schema.

`tuneloop.db.migrate` runs it on a connection it has already locked (passed in
`config.attributes["connection"]`), so the whole upgrade is one transaction. Run by the alembic command
line instead, it connects to the configured `sqlalchemy.url`.

Migrations are written by hand (no target metadata, so `--autogenerate` refuses rather than proposing
to drop the tables of modules it did not import); tests/db/test_migrations.py checks that they build
exactly what the ORM classes of every owner declare.
"""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_on(connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=None, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_on(config.attributes["connection"])
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_on(connection)
        connection.commit()
