"""The database: our own SQLite engine (WAL, foreign keys, busy timeout), migrations, sessions."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; every open recovers
    fcntl = None  # type: ignore[assignment]

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import (ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError,
                            OperationalError)
from sqlalchemy.orm import Session, sessionmaker

from . import filehooks
from .errors import StorageError, database_error
from .media import MediaStore
from .models import dump_json
from .paths import DB_FILENAME, MEDIA_DIRNAME

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_FILENAME = "studio.lock"
BUSY_TIMEOUT_MS = 15_000
_BEGIN_OPTION = "storage_begin"
_MIGRATION_LOCK = 0x57414E  # "WAN": the advisory lock PostgreSQL migrations take


def make_engine(path: Path, *, foreign_keys: bool = True) -> Engine:
    """A SQLAlchemy engine for one SQLite file, set up by a connect listener."""
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        json_serializer=dump_json,
        pool_size=8,
        max_overflow=32,  # Gradio's worker threads may all want a session at once
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" event below emits BEGIN itself,
        # so DDL is transactional and every write transaction takes the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            log.warning("SQLite kept journal mode %r for %s (WAL unsupported here).", mode, path)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE: a transaction that reads then writes cannot hit an unretryable SQLITE_BUSY.
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def alembic_config(connection: Any | None = None) -> Config:
    """An Alembic config pointing at storage/migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def known_revisions() -> set[str]:
    """Every migration revision this version of the studio ships."""
    return {rev.revision for rev in _script().walk_revisions()}


def head_revisions() -> set[str]:
    """The revision(s) a fully migrated database is at."""
    return set(_script().get_heads())


def check_existing_file(path: Path) -> set[str]:
    """Refuse, read-only and before anything writes, a damaged, foreign or newer database file.

    Returns the file's current migration revisions (empty for a new database).
    """
    if not path.exists():
        return set()
    if not path.is_file():
        raise StorageError(f"{path} is not a file; move it aside or choose another data folder.")
    if path.stat().st_size == 0:
        return set()
    untouched = "it was left untouched"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in con.execute("PRAGMA quick_check")]
            tables = {row[0] for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            revisions = ([row[0] for row in con.execute("SELECT version_num FROM alembic_version")]
                         if "alembic_version" in tables else [])
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"The database {path} cannot be read ({exc}); {untouched}: restore a "
                           "backup or move it aside to start afresh.") from exc
    if problems != ["ok"]:
        raise StorageError(f"The database {path} is damaged ({problems[0]}); {untouched}: restore "
                           "a backup or move it aside to start afresh.")
    if tables and "alembic_version" not in tables:
        raise StorageError(f"{path} is not a Wan Studio database; {untouched}: choose another "
                           "data folder.")
    unknown = sorted(set(revisions) - known_revisions())
    if unknown:
        raise StorageError(f"The database {path} was written by a newer Wan Studio (schema "
                           f"{', '.join(unknown)}); {untouched}: upgrade Wan Studio or use another "
                           "data folder.")
    return set(revisions)


def upgrade(path: Path) -> None:
    """Apply every migration up to head, in one transaction, with foreign keys off (batch mode)."""
    engine = make_engine(path, foreign_keys=False)
    try:
        with engine.connect() as connection:
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()


class StudioSession(Session):
    """A Session whose database failures leave it as a `DatabaseError` with a sentence (the SQL,
    its parameters and the driver's text go to the log, never to a caller that might show them)."""

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> None:
        super().__exit__(type_, value, traceback)
        # Integrity errors are the code's mistakes and stay as they are; these are the machine's.
        if isinstance(value, (OperationalError, InterfaceError, sqlite3.OperationalError)):
            error = database_error(value)
            log.error("database error: %s", getattr(value, "orig", None) or value)
            raise error from value


class Database:
    """One data folder (media, and `studio.db` for SQLite) and the database of its takes:
    SQLite in that folder by default, or PostgreSQL shared by several processes and machines."""

    def __init__(self, data_dir: Path, engine: Engine, media: MediaStore) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_FILENAME
        self.engine = engine
        self.media = media
        self._sessions = sessionmaker(bind=engine, class_=StudioSession, autobegin=False,
                                      expire_on_commit=False)
        self._read_sessions = sessionmaker(
            bind=engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"}), class_=StudioSession,
            autobegin=False, expire_on_commit=False)
        filehooks.install(self._sessions, media)
        filehooks.install(self._read_sessions, media)
        self.requeued: list[int] = []
        self.recovered: list[int] = []
        self._lock: _FolderLock | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes may use this database at once (PostgreSQL)."""
        return self.engine.dialect.name != "sqlite"

    @classmethod
    def open(cls, data_dir: str | Path, exclusive: bool = True, url: str | None = None) -> "Database":
        """Create the folder if needed, check and migrate the database, and recover takes.

        `url`: a PostgreSQL URL (`postgresql+psycopg://user@host/db`) shared by the studio and its
        workers; None for SQLite in `data_dir/studio.db`. With SQLite, `exclusive` (a server)
        holds the folder's lock, or refuses with a sentence when another process holds it (two
        servers would each take the other's running takes for dead ones), and takes left running
        by a killed process are queued again once; `exclusive=False` (operator commands) opens
        beside a running server and recovers nothing. With PostgreSQL, processes share the
        database on purpose: only takes whose worker's lease ran out are recovered.
        """
        data_dir = Path(data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the data folder {data_dir} ({exc.strerror}); "
                               "choose another with --data-dir.") from exc
        if not data_dir.is_dir():
            raise StorageError(f"The data folder {data_dir} is not a folder; choose another with --data-dir.")
        if url and not url.startswith("sqlite"):
            return cls._open_shared(data_dir, url)
        lock = None
        if exclusive:  # before migrating: two servers starting at once must not both upgrade
            lock = _FolderLock.try_acquire(data_dir / LOCK_FILENAME)
            if lock is None:
                raise StorageError(
                    f"Another Wan Studio is already using the data folder {data_dir}"
                    f"{_holder(data_dir / LOCK_FILENAME)}; stop it first or choose another "
                    "folder with --data-dir.")
        try:
            path = data_dir / DB_FILENAME
            current = check_existing_file(path)
            try:
                if current != head_revisions():
                    upgrade(path)
            except (sqlite3.Error, DBAPIError) as exc:
                reason = getattr(exc, "orig", None) or exc
                raise StorageError(f"Could not prepare the database {path} ({reason}); check "
                                   "that the data folder and the file are writable.") from exc
            media = MediaStore(data_dir / MEDIA_DIRNAME)
            database = cls(data_dir, make_engine(path), media)
            database._lock = lock
            if lock is not None:
                database.recover(everyone=True)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return database

    @classmethod
    def _open_shared(cls, data_dir: Path, url: str) -> "Database":
        """Open (and migrate, one process at a time) a PostgreSQL database."""
        engine = make_shared_engine(url)
        where = _where(url)
        try:
            with engine.begin() as connection:
                # Several processes may start at once: one migrates, the others wait for it.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                current = _revisions(connection)
                unknown = sorted(current - known_revisions())
                if unknown:
                    raise StorageError(f"The database at {where} was written by a newer Wan Studio "
                                       f"(schema {', '.join(unknown)}); upgrade Wan Studio.")
                if current != head_revisions():
                    command.upgrade(alembic_config(connection), "head")
        except DBAPIError as exc:
            engine.dispose()
            raise StorageError(f"Cannot use the database at {where} ({_reason(exc)}); check "
                               "--database-url and that PostgreSQL is running.") from exc
        except BaseException:
            engine.dispose()
            raise
        database = cls(data_dir, engine, MediaStore(data_dir / MEDIA_DIRNAME))
        database.recover(everyone=False)
        return database

    def session(self) -> Session:
        """A session for writes: `with db.session() as s, s.begin(): ...` (no autobegin)."""
        return self._sessions()

    def read_session(self) -> Session:
        """A session for reads that never waits on writers: `with db.read_session() as s, s.begin():`."""
        return self._read_sessions()

    def recover(self, everyone: bool = False) -> None:
        """Queue again (once) the takes whose worker died, and remove partial files.

        `everyone`: every running take's worker is known to be gone (a lone studio starting).
        """
        from .queue import release_expired

        if everyone:
            self.media.sweep_temp_files()
        with self.session() as session, session.begin():
            self.requeued, self.recovered = release_expired(session, everyone=everyone)

    def close(self) -> None:
        """Release every connection and the folder lock (the files stay as they are)."""
        self.engine.dispose()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def make_shared_engine(url: str) -> Engine:
    """A SQLAlchemy engine for PostgreSQL (psycopg 3), checking connections before use so a
    database restart costs a retry, not an error."""
    try:
        return create_engine(url, json_serializer=dump_json, pool_size=8, max_overflow=32,
                             pool_pre_ping=True)
    except (ArgumentError, ImportError, NoSuchModuleError) as exc:
        raise StorageError(f"The database URL is not usable ({exc}); give one like "
                           "postgresql+psycopg://user@host:5432/wanstudio, with psycopg "
                           "installed (pip install 'psycopg[binary]').") from None


def _revisions(connection: Any) -> set[str]:
    has_table = connection.exec_driver_sql(
        "SELECT to_regclass('alembic_version') IS NOT NULL").scalar()
    if not has_table:
        return set()
    return {row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")}


def _where(url: str) -> str:
    """host:port/database of a URL, never its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the given URL"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _reason(exc: DBAPIError) -> str:
    """The driver's first line, without anything after (it may echo the connection string)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _holder(path: Path) -> str:
    """" (process N)" naming the lock holder, when its file says."""
    try:
        pid = path.read_text(encoding="ascii").strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


class _FolderLock:
    """An advisory lock held while a Database is open: only its holder recovers unfinished takes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def try_acquire(cls, path: Path) -> "_FolderLock | None":
        """The lock, or None when another open Database (in any process) holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"Cannot write the lock file {path} ({exc.strerror}); the data "
                               "folder must be writable, or choose another with --data-dir.") from exc
        if fcntl is None:
            return cls(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the next one's message
        return cls(fd)

    def release(self) -> None:
        """Let the next Database that opens the folder recover."""
        os.close(self._fd)  # closing drops the flock
