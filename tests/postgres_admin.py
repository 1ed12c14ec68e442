"""Making and dropping throwaway PostgreSQL databases, for the tests and the queue benchmark."""

from __future__ import annotations


def with_database(url: str, name: str) -> str:
    """The server URL `url` pointed at database `name` (its password kept)."""
    from sqlalchemy import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def admin_sql(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    from sqlalchemy import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
