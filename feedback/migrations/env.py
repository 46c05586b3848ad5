"""Alembic environment: the target metadata is every SQLModel table in ``feedback.models``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool, text
from sqlmodel import SQLModel

import feedback.learned  # noqa: F401  (registers the learned-answer tables)
import feedback.models  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata
#: Postgres advisory lock held while migrating, so that processes starting together (two workers, a web
#: process) migrate one after the other; the next one then finds the schema at head. (SQLite: a file lock, in
#: feedback.db.migrate.)
MIGRATION_LOCK = 0x6465736B  # "desk"


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool, hide_parameters=True)  # no row's text in errors
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
