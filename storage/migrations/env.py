"""Alembic environment for the studio database.

At start-up `storage.db.upgrade` passes a connection (foreign keys off, so batch-mode table
rebuilds cannot cascade deletes). From a shell: `alembic -c storage/alembic.ini upgrade head`
or `... revision --autogenerate -m "why"`, against the database named in alembic.ini or by
`-x db=PATH`.
"""

from __future__ import annotations

from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

from storage.errors import StorageError
from storage.models import Base

config = context.config


def run(connection: Connection) -> None:
    """Run the pending migrations in one transaction, then prove every foreign key still holds."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":  # PostgreSQL checks every reference as it goes
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StorageError(f"A migration left {len(broken)} broken references; nothing "
                                   "was changed.")


def run_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata,
                      render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Use the connection given by storage.db, or open the database the command line names."""
    given = config.attributes.get("connection")
    if given is not None:
        run(given)
        return
    from storage.db import make_engine

    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    url = config.get_main_option("sqlalchemy.url") or ""
    path = context.get_x_argument(as_dictionary=True).get("db") or url.removeprefix("sqlite:///")
    if not path:
        raise StorageError("Name the database: alembic -c storage/alembic.ini -x db=data/studio.db ...")
    engine = make_engine(Path(path), foreign_keys=False)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
