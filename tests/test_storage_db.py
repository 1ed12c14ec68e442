"""Opening the database: data folder, SQLite set-up, refusing bad files, migrations, recovery."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from storage_support import JPEG, MP4, png

import storage
from storage.db import alembic_config, head_revisions, make_engine, upgrade
from storage.models import Base
from storage.paths import resolve_data_dir

REQUEST = {"variant": "ti2v-5b", "prompt": "a red ball rolls across a meadow", "seed": 7}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path):
    database = storage.Database.open(tmp_path / "data")
    yield database
    database.close()


# Data folder ------------------------------------------------------------------------------------


def test_data_dir_explicit_beats_env_and_space(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.mkdir()
    got = resolve_data_dir(tmp_path / "mine", environ={"WAN_STUDIO_DATA": str(tmp_path / "env")},
                           space_dir=space)
    assert got == tmp_path / "mine"


def test_data_dir_env_beats_space(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.mkdir()
    got = resolve_data_dir(environ={"WAN_STUDIO_DATA": str(tmp_path / "env")}, space_dir=space)
    assert got == tmp_path / "env"


def test_data_dir_uses_writable_space_folder(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.mkdir()
    assert resolve_data_dir(environ={}, space_dir=space) == space


def test_data_dir_falls_back_to_local_data(tmp_path: Path) -> None:
    got = resolve_data_dir(environ={"WAN_STUDIO_DATA": "  "}, space_dir=tmp_path / "absent", cwd=tmp_path)
    assert got == tmp_path / "data"


def test_data_dir_skips_read_only_space_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = tmp_path / "space"
    space.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == space else real_access(p, mode))
    assert resolve_data_dir(environ={}, space_dir=space, cwd=tmp_path) == tmp_path / "data"


def test_data_dir_skips_space_path_that_is_a_file(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.write_text("file")
    assert resolve_data_dir(environ={}, space_dir=space, cwd=tmp_path) == tmp_path / "data"


def test_data_dir_relative_paths_become_absolute(tmp_path: Path) -> None:
    assert resolve_data_dir("rel/dir", environ={}, cwd=tmp_path) == tmp_path / "rel" / "dir"


def test_empty_explicit_data_dir_is_refused() -> None:
    with pytest.raises(storage.InvalidInputError, match="empty"):
        resolve_data_dir("  ", environ={})


def test_open_creates_the_folder_and_its_layout(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data"
    with storage.Database.open(target) as db:
        assert (target / "studio.db").is_file()
        assert db.media.root == (target / "media").resolve()


def test_open_refuses_a_file_as_data_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    with pytest.raises(storage.StorageError, match="data folder"):
        storage.Database.open(blocker)


# SQLite set-up ----------------------------------------------------------------------------------


def test_every_connection_has_wal_foreign_keys_and_busy_timeout(db: storage.Database) -> None:
    for make in (db.session, db.read_session):
        with make() as s, s.begin():
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_foreign_keys_are_enforced(db: storage.Database) -> None:
    with pytest.raises(IntegrityError):
        with db.session() as s, s.begin():
            s.execute(text("INSERT INTO share_links (token, take_id, created_at) "
                           "VALUES ('x', 999, '2025-01-01 00:00:00')"))


def test_sessions_never_autobegin(db: storage.Database) -> None:
    with db.session() as s, pytest.raises(InvalidRequestError, match="[Aa]utobegin"):
        storage.list_projects(s, "alice")


# Refusing bad files -----------------------------------------------------------------------------


def test_database_from_the_future_is_refused_and_left_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    storage.Database.open(data).close()
    path = data / "studio.db"
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = digest(path)
    with pytest.raises(storage.StorageError, match="newer Wan Studio.*9999_from_the_future.*left untouched"):
        storage.Database.open(data)
    assert digest(path) == before


@pytest.mark.parametrize("schema, message", [
    # A newer studio's file still in rollback-journal mode: switching it to WAL would rewrite it.
    ("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);"
     "INSERT INTO alembic_version VALUES ('abcdef');", "newer Wan Studio"),
    ("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);", "not a Wan Studio database"),
], ids=["future-rollback-journal", "foreign"])
def test_other_sqlite_files_are_refused_and_left_untouched(tmp_path: Path, schema: str, message: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "studio.db"
    con = sqlite3.connect(path)
    con.executescript(schema)
    con.close()
    before = digest(path)
    with pytest.raises(storage.StorageError, match=message):
        storage.Database.open(data)
    assert digest(path) == before


@pytest.mark.parametrize("content", [
    b"this is not a database at all\n" * 300,
    b"SQLite format 3\x00" + b"\xff" * 4080,
], ids=["garbage", "bad-header"])
def test_corrupt_database_file_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "studio.db"
    path.write_bytes(content)
    with pytest.raises(storage.StorageError, match="left untouched"):
        storage.Database.open(data)
    assert path.read_bytes() == content


def test_truncated_database_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with storage.Database.open(data) as db, db.session() as s, s.begin():
        project = storage.create_project(s, "alice", "Many")
        for i in range(30):
            storage.add_take(s, "alice", project.id, {**REQUEST, "prompt": "x" * 5000 + str(i)})
    path = data / "studio.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    half = path.read_bytes()
    with pytest.raises(storage.StorageError, match="left untouched"):
        storage.Database.open(data)
    assert path.read_bytes() == half


def test_empty_file_counts_as_a_new_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "studio.db").write_bytes(b"")
    with storage.Database.open(data) as db, db.session() as s, s.begin():
        assert storage.list_projects(s, "alice") == []


# Migrations -------------------------------------------------------------------------------------


def test_migrated_empty_database_matches_the_orm_models(tmp_path: Path) -> None:
    path = tmp_path / "studio.db"
    upgrade(path)
    engine = make_engine(path)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def _migrate(path: Path, target: str, down: bool = False) -> None:
    engine = make_engine(path, foreign_keys=False)
    try:
        with engine.connect() as connection:
            (command.downgrade if down else command.upgrade)(alembic_config(connection), target)
    finally:
        engine.dispose()


def test_upgrading_a_first_revision_database_keeps_every_row(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "studio.db"
    _migrate(path, "0001")
    con = sqlite3.connect(path)
    con.executescript("""
        INSERT INTO owners VALUES ('alice', '2025-01-01 10:00:00.000000');
        INSERT INTO projects VALUES (1, 'alice', 'Old project', '2025-01-01 10:00:00.000000',
                                     '2025-01-01 10:00:00.000000');
        INSERT INTO takes (id, project_id, owner, request, variant, seed, prompt, status, error, step,
                           total_steps, queued_at, started_at, finished_at, video_path, poster_path,
                           image_path, parent_id, parent_kind, favourite)
        VALUES (1, 1, 'alice', '{"variant": "ti2v-5b", "prompt": "first", "seed": 1}', 'ti2v-5b', 1,
                'first', 'completed', NULL, 50, 50, '2025-01-01 10:00:00.000000',
                '2025-01-01 10:00:01.000000', '2025-01-01 10:05:00.000000', 'p1/t1/video.mp4',
                'p1/t1/poster.jpg', NULL, NULL, NULL, 1),
               (2, 1, 'alice', '{"variant": "ti2v-5b", "prompt": "second", "seed": 2}', 'ti2v-5b', 2,
                'second', 'failed', 'Out of memory.', 3, 50, '2025-01-01 11:00:00.000000',
                '2025-01-01 11:00:01.000000', '2025-01-01 11:00:09.000000', NULL, NULL, NULL, 1,
                'remix', 0);
        INSERT INTO share_links VALUES ('tok-one', 1, '2025-01-02 00:00:00.000000', NULL);
    """)
    con.commit()
    con.close()

    with storage.Database.open(data) as db, db.session() as s, s.begin():
        project = storage.get_project(s, "alice", 1)
        assert project is not None and project.name == "Old project" and project.take_count == 2
        first, second = storage.get_take(s, "alice", 1), storage.get_take(s, "alice", 2)
        assert first is not None and second is not None
        assert first.favourite and first.request["prompt"] == "first" and first.step == 50
        assert second.parent_id == 1 and second.parent_kind == "remix"
        assert second.error == "Out of memory." and second.status == "failed"
        # the batch rebuild of takes did not cascade-delete the share link
        shared = storage.resolve_share_link(s, "tok-one")
        assert shared is not None and shared.id == 1
        links = storage.list_share_links(s, "alice", 1)
        assert [link.token for link in links] == ["tok-one"]
        assert {s.execute(text("SELECT version_num FROM alembic_version")).scalar()} == head_revisions()
        # ids keep growing after the rebuild: AUTOINCREMENT survived
        new = storage.add_take(s, "alice", 1, REQUEST)
        assert new.id == 3
    with pytest.raises(IntegrityError):  # 0002's check constraint is in force
        with db_session(data) as s:
            s.execute(text("UPDATE takes SET status = 'exploded' WHERE id = 1"))


class db_session:
    """A throwaway write transaction on a data folder (for constraint checks)."""

    def __init__(self, data: Path) -> None:
        self.db = storage.Database.open(data)

    def __enter__(self):
        self.session = self.db.session()
        self.tx = self.session.begin()
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.tx.__exit__(*exc)
        self.session.close()
        self.db.close()


def test_downgrade_to_nothing_and_back_up(tmp_path: Path) -> None:
    path = tmp_path / "studio.db"
    upgrade(path)
    _migrate(path, "base", down=True)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert tables <= {"alembic_version", "sqlite_sequence"}
    upgrade(path)
    engine = make_engine(path)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


# Recovery at start-up ---------------------------------------------------------------------------


def test_a_restart_keeps_queued_takes_and_queues_running_ones_again_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with storage.Database.open(data) as db, db.session() as s, s.begin():
        project = storage.create_project(s, "alice", "P")
        pending = storage.add_take(s, "alice", project.id, REQUEST, image=png())
        running = storage.add_take(s, "alice", project.id, REQUEST)
        assert storage.claim_next(s, "worker-1").id == pending.id
        assert storage.claim_next(s, "worker-1").id == running.id
        again = storage.add_take(s, "alice", project.id, REQUEST)
        done = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
        done = storage.finish_take(s, "alice", done.id, "completed", video=MP4, poster=JPEG)
        media = db.media
    stray_temp = media.take_dir(project.id, done.id) / ".tmp-0123-video.mp4"
    stray_temp.write_bytes(b"temp")

    with storage.Database.open(data) as db, db.session() as s, s.begin():
        assert db.requeued == [pending.id, running.id] and db.recovered == []
        for take_id in (pending.id, running.id, again.id):
            take = storage.get_take(s, "alice", take_id)
            assert take is not None and take.status == "pending" and take.worker is None
        kept = storage.get_take(s, "alice", pending.id)
        assert kept is not None and kept.image_path and not kept.media_missing  # the input stays
        assert not stray_temp.exists()
        after = storage.get_take(s, "alice", done.id)
        assert after is not None and after.status == "completed" and not after.media_missing
        assert storage.claim_next(s, "worker-2").id == pending.id  # second try

    with storage.Database.open(data) as db, db.session() as s, s.begin():
        assert db.recovered == [pending.id]  # it died twice: interrupted, not run a third time
        take = storage.get_take(s, "alice", pending.id)
        assert take.status == "interrupted" and "stopped twice" in take.error


# One server per data folder ---------------------------------------------------------------------


def test_a_second_server_on_a_folder_in_use_is_refused_with_a_sentence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with storage.Database.open(data):
        with pytest.raises(storage.StorageError, match=r"already using the data folder .*process \d+"):
            storage.Database.open(data)
        with storage.Database.open(data, exclusive=False) as side:  # an operator command
            assert side.recovered == []
    storage.Database.open(data).close()  # free again once the first one closed
