"""Alembic environment for the registry schema.

`tuneloop.registry.migrate` runs it on a connection it has already locked (passed in
`config.attributes["connection"]`), so the whole upgrade is one transaction. Run by the alembic command
line instead, it connects to the configured `sqlalchemy.url`.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from tuneloop.registry.tables import Base

config = context.config


def run_on(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_on(config.attributes["connection"])
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_on(connection)
        connection.commit()
