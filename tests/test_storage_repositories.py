"""Repositories: projects, takes, share links; ownership, names, lifecycle, files with rows."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from storage_support import (JPEG, MP4, migrated, open_backend, png,  # noqa: F401 (fixtures)
                             postgres_template)

import storage
from storage.models import Project, Take

REQUEST = {"variant": "ti2v-5b", "prompt": "a red ball rolls across a meadow", "seed": 7,
           "steps": 6, "width": 64, "height": 64}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, migrated: Path):
    """The same suite on both backends (PostgreSQL skips, saying why, when none is running)."""
    template = request.getfixturevalue("postgres_template") if request.param == "postgresql" else migrated
    yield from open_backend(request.param, tmp_path / "data", template)


def completed_take(db: storage.Database, owner: str, project_id: int, **kwargs) -> storage.TakeRecord:
    with db.session() as s, s.begin():
        take = storage.add_take(s, owner, project_id, {**REQUEST, **kwargs})
        storage.start_take(s, owner, take.id)
        return storage.finish_take(s, owner, take.id, "completed", video=MP4, poster=JPEG)


@pytest.fixture
def project(db: storage.Database) -> storage.ProjectRecord:
    with db.session() as s, s.begin():
        return storage.create_project(s, "alice", "Alice's film")


# Projects ---------------------------------------------------------------------------------------


def test_projects_list_newest_first_in_pages(db: storage.Database) -> None:
    with db.session() as s, s.begin():
        made = [storage.create_project(s, "alice", f"P{i}") for i in range(5)]
        storage.create_project(s, "bob", "Bob's")
    with db.read_session() as s, s.begin():
        first = storage.list_projects(s, "alice", limit=2)
        rest = storage.list_projects(s, "alice", limit=10, offset=2)
    assert [p.name for p in first] == ["P4", "P3"]
    assert [p.name for p in rest] == ["P2", "P1", "P0"]
    assert {p.owner for p in first + rest} == {"alice"}
    assert made[0].take_count == 0


def test_rename_and_take_count(db: storage.Database, project: storage.ProjectRecord) -> None:
    completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        renamed = storage.rename_project(s, "alice", project.id, "  New name  ")
    assert renamed.name == "New name" and renamed.take_count == 1
    assert renamed.updated_at > project.updated_at


def test_default_project_is_created_once(db: storage.Database) -> None:
    with db.session() as s, s.begin():
        first = storage.get_or_create_default_project(s, "carol")
        again = storage.get_or_create_default_project(s, "carol")
    assert first.id == again.id and first.name == "My project"


@pytest.mark.parametrize("name", [
    "🎬 Night shoot 👨‍👩‍👧‍👦",  # emoji, including a ZWJ family sequence
    "שלום עולם",  # Hebrew
    "مشهد ليلي في المدينة",  # Arabic
    "mixed עברית and English ‏mark",  # with a right-to-left mark (U+200F) inside
    "x" * 200,
    "'; DROP TABLE projects; --",
])
def test_names_are_stored_exactly(db: storage.Database, name: str) -> None:
    with db.session() as s, s.begin():
        made = storage.create_project(s, "alice", name)
    with db.read_session() as s, s.begin():
        got = storage.get_project(s, "alice", made.id)
    assert got is not None and got.name == name


@pytest.mark.parametrize("name, message", [
    ("", "empty"),
    ("   \t  ", "empty"),
    ("x" * 10_000, "10000 characters"),
    ("bad\x00name", "U\\+0000"),
    ("two\nlines", "U\\+000A"),
    ("escape\x1b[31mred", "U\\+001B"),
    ("evil\u202egnp.exe", "U\\+202E"),  # right-to-left override: displays as something else
    ("iso\u2067late", "U\\+2067"),
    (None, "text"),
    (42, "text"),
])
def test_bad_names_are_rejected_and_change_nothing(db: storage.Database, project: storage.ProjectRecord,
                                                   name: object, message: str) -> None:
    with pytest.raises(storage.InvalidInputError, match=message):
        with db.session() as s, s.begin():
            storage.create_project(s, "alice", name)  # type: ignore[arg-type]
    with pytest.raises(storage.InvalidInputError, match=message):
        with db.session() as s, s.begin():
            storage.rename_project(s, "alice", project.id, name)  # type: ignore[arg-type]
    with db.read_session() as s, s.begin():
        assert [p.name for p in storage.list_projects(s, "alice")] == ["Alice's film"]
        if db.engine.dialect.name == "sqlite":
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"


@pytest.mark.parametrize("owner", ["", None, "has space", "tab\tkey", "x" * 257, "nul\x00", 7])
def test_bad_owner_keys_are_rejected(db: storage.Database, owner: object) -> None:
    with pytest.raises(storage.InvalidInputError, match="owner key"):
        with db.session() as s, s.begin():
            storage.create_project(s, owner, "P")  # type: ignore[arg-type]


@pytest.mark.parametrize("limit, offset", [(0, 0), (201, 0), (10, -1), (True, 0), ("10", 0), (10, 1.5)])
def test_bad_pages_are_rejected(db: storage.Database, project: storage.ProjectRecord,
                                limit: object, offset: object) -> None:
    with db.read_session() as s, s.begin():
        with pytest.raises(storage.InvalidInputError, match="page"):
            storage.list_projects(s, "alice", limit=limit, offset=offset)  # type: ignore[arg-type]
        with pytest.raises(storage.InvalidInputError, match="page"):
            storage.list_takes(s, "alice", project.id, limit=limit, offset=offset)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_id", ["1", 1.0, True, None])
def test_ids_must_be_whole_numbers(db: storage.Database, project: storage.ProjectRecord, bad_id: object) -> None:
    with db.read_session() as s, s.begin():
        with pytest.raises(storage.InvalidInputError, match="whole number"):
            storage.get_project(s, "alice", bad_id)  # type: ignore[arg-type]
        with pytest.raises(storage.InvalidInputError, match="whole number"):
            storage.get_take(s, "alice", bad_id)  # type: ignore[arg-type]


# Ownership --------------------------------------------------------------------------------------


def assert_not_found_alike(db: storage.Database, calls: list, theirs: int, missing: int) -> None:
    """Each call raises NotFoundError with the same words for another owner's id and a missing one."""
    for call in calls:
        messages = []
        for some_id in (theirs, missing):
            with pytest.raises(storage.NotFoundError) as caught:
                with db.session() as s, s.begin():
                    call(s, some_id)
            messages.append(str(caught.value))
        assert messages[0] == messages[1]


def test_another_owners_project_is_not_found_like_a_missing_one(
        db: storage.Database, project: storage.ProjectRecord) -> None:
    missing = project.id + 1000
    calls = [
        lambda s, pid: storage.rename_project(s, "mallory", pid, "Mine now"),
        lambda s, pid: storage.delete_project(s, "mallory", pid),
        lambda s, pid: storage.list_takes(s, "mallory", pid),
        lambda s, pid: storage.add_take(s, "mallory", pid, REQUEST),
        lambda s, pid: storage.export_project(s, "mallory", pid, Path("/nonexistent/x.zip")),
    ]
    assert_not_found_alike(db, calls, project.id, missing)
    with db.read_session() as s, s.begin():
        assert storage.get_project(s, "mallory", project.id) is None
        assert storage.list_projects(s, "mallory") == []
        assert storage.get_project(s, "alice", project.id) == dataclasses.replace(project)


def test_another_owners_take_is_not_found_like_a_missing_one(
        db: storage.Database, project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        own = storage.create_project(s, "mallory", "Mallory's")
    missing = take.id + 1000
    calls = [
        lambda s, tid: storage.start_take(s, "mallory", tid),
        lambda s, tid: storage.update_progress(s, "mallory", tid, 1, 2),
        lambda s, tid: storage.finish_take(s, "mallory", tid, "failed"),
        lambda s, tid: storage.set_favourite(s, "mallory", tid, True),
        lambda s, tid: storage.delete_take(s, "mallory", tid),
        lambda s, tid: storage.lineage(s, "mallory", tid),
        lambda s, tid: storage.create_share_link(s, "mallory", tid),
        lambda s, tid: storage.list_share_links(s, "mallory", tid),
        lambda s, tid: storage.add_take(s, "mallory", own.id, REQUEST, parent_id=tid, parent_kind="remix"),
    ]
    assert_not_found_alike(db, calls, take.id, missing)
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "mallory", take.id) is None
        after = storage.get_take(s, "alice", take.id)
    assert after == take  # nothing mallory tried changed it


# Takes ------------------------------------------------------------------------------------------


def test_take_lifecycle_records_everything(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST)
    assert take.status == "pending" and take.step == 0 and take.started_at is None
    assert take.request == REQUEST and take.variant == "ti2v-5b" and take.seed == 7
    assert take.prompt == REQUEST["prompt"] and take.owner == "alice"
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", take.id)
        assert take.status == "running" and take.started_at is not None
        take = storage.update_progress(s, "alice", take.id, 3, 6)
        assert (take.step, take.total_steps) == (3, 6)
        take = storage.finish_take(s, "alice", take.id, "completed", video=MP4, poster=JPEG)
    assert take.status == "completed" and take.finished and take.step == 6
    assert take.finished_at is not None and take.finished_at >= take.started_at >= take.queued_at
    assert re.fullmatch(rf"p{project.id}/t{take.id}/video-[0-9a-f]{{32}}\.mp4", take.video_path)
    assert re.fullmatch(rf"p{project.id}/t{take.id}/poster-[0-9a-f]{{32}}\.jpg", take.poster_path)
    assert db.media.resolve(take.video_path).read_bytes() == MP4
    assert not take.media_missing and take.error is None


@pytest.mark.parametrize("status, message", [("failed", "The generation failed."),
                                             ("cancelled", "The generation was cancelled.")])
def test_failed_and_cancelled_takes_keep_a_message(db: storage.Database, project: storage.ProjectRecord,
                                                   status: str, message: str) -> None:
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST)
        storage.start_take(s, "alice", take.id)
        plain = storage.finish_take(s, "alice", take.id, status)
        other = storage.add_take(s, "alice", project.id, REQUEST)
        long = storage.finish_take(s, "alice", other.id, status, error="E" * 50_000)
    assert plain.error == message and plain.status == status
    assert long.error is not None and len(long.error) == 4000 and long.error.endswith("…")


@pytest.mark.parametrize("steps, target", [
    ((), "completed"),  # pending -> completed skips running
    (("start", "complete"), "running"),  # completed -> running
    (("start", "fail"), "cancelled"),  # failed -> cancelled
    (("cancel",), "running"),  # cancelled -> running
    (("start",), "running"),  # running -> running
])
def test_impossible_transitions_are_refused(db: storage.Database, project: storage.ProjectRecord,
                                            steps: tuple[str, ...], target: str) -> None:
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST)
        for step in steps:
            if step == "start":
                storage.start_take(s, "alice", take.id)
            elif step == "complete":
                storage.finish_take(s, "alice", take.id, "completed", video=MP4)
            elif step == "fail":
                storage.finish_take(s, "alice", take.id, "failed")
            else:
                storage.finish_take(s, "alice", take.id, "cancelled")
        before = storage.get_take(s, "alice", take.id)
    files_before = sorted(db.media.take_dir(project.id, take.id).glob("*"))
    with pytest.raises(storage.TransitionError, match="cannot become"):
        with db.session() as s, s.begin():
            if target == "running":
                storage.start_take(s, "alice", take.id)
            else:
                storage.finish_take(s, "alice", take.id, target,
                                    video=MP4 if target == "completed" else None)
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "alice", take.id) == before
    assert sorted(db.media.take_dir(project.id, take.id).glob("*")) == files_before


@pytest.mark.parametrize("kwargs, error, message", [
    ({"status": "interrupted"}, storage.InvalidInputError, "completed, failed or cancelled"),
    ({"status": "done"}, storage.InvalidInputError, "completed, failed or cancelled"),
    ({"status": "completed"}, storage.InvalidInputError, "needs its video"),
    ({"status": "failed", "video": MP4}, storage.InvalidInputError, "Only a completed take"),
    ({"status": "completed", "video": b"GIF89a not a video"}, storage.InvalidInputError, "MP4"),
    ({"status": "completed", "video": MP4, "poster": b"BM bitmap"}, storage.InvalidInputError, "JPG"),
    ({"status": "completed", "video": "/no/such/file.mp4"}, storage.InvalidInputError, "does not exist"),
])
def test_bad_finishes_are_refused_and_leave_no_files(db: storage.Database, project: storage.ProjectRecord,
                                                     kwargs: dict, error: type, message: str) -> None:
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
    with pytest.raises(error, match=message):
        with db.session() as s, s.begin():
            storage.finish_take(s, "alice", take.id, **kwargs)
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "alice", take.id) == take
    assert not db.media.take_dir(project.id, take.id).exists()


@pytest.mark.parametrize("step, total", [(-1, 6), (7, 6), (0, 0), (1.5, 6), (True, 6), (1, "6")])
def test_bad_progress_is_refused(db: storage.Database, project: storage.ProjectRecord,
                                 step: object, total: object) -> None:
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
    with db.session() as s, s.begin(), pytest.raises(storage.InvalidInputError, match="[Pp]rogress"):
        storage.update_progress(s, "alice", take.id, step, total)  # type: ignore[arg-type]


def test_progress_needs_a_running_take(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST)
        with pytest.raises(storage.TransitionError, match="running"):
            storage.update_progress(s, "alice", take.id, 1, 6)


def test_rows_and_files_roll_back_together(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with db.session() as s, s.begin():
            finished = storage.finish_take(s, "alice", take.id, "completed", video=MP4, poster=JPEG)
            assert db.media.resolve(finished.video_path).is_file()  # the file came first
            raise Boom("the row never commits")
    assert not db.media.take_dir(project.id, take.id).exists()
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "alice", take.id) == take


def test_a_failed_commit_removes_the_new_files(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
    with pytest.raises(IntegrityError, match="(?i)check constraint"):
        with db.session() as s, s.begin():
            storage.finish_take(s, "alice", take.id, "completed", video=MP4)
            # the database itself refuses this row, after the file was written
            s.execute(text("UPDATE takes SET step = -1 WHERE id = :id"), {"id": take.id})
    assert not db.media.take_dir(project.id, take.id).exists()


@pytest.mark.parametrize("request_, message", [
    ("not a dict", "must be a dict"),
    ({"prompt": "no variant"}, "variant"),
    ({"variant": ""}, "variant"),
    ({"variant": "ti2v-5b", "seed": -1}, "seed"),
    ({"variant": "ti2v-5b", "seed": "7"}, "seed"),
    ({"variant": "ti2v-5b", "prompt": 3}, "prompt"),
    ({"variant": "ti2v-5b", "guidance": float("nan")}, "JSON"),
    ({"variant": "ti2v-5b", "image": object()}, "JSON"),
    ({"variant": "ti2v-5b", "prompt": "x" * 300_000}, "KiB"),
])
def test_bad_requests_are_refused(db: storage.Database, project: storage.ProjectRecord,
                                  request_: object, message: str) -> None:
    with db.session() as s, s.begin(), pytest.raises(storage.InvalidInputError, match=message):
        storage.add_take(s, "alice", project.id, request_)  # type: ignore[arg-type]


def test_requests_are_copied_not_shared(db: storage.Database, project: storage.ProjectRecord) -> None:
    original = {**REQUEST, "preview": {"enabled": True, "max_side": 256}}
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, original)
    original["preview"]["max_side"] = 1
    take.request["preview"]["enabled"] = False
    with db.read_session() as s, s.begin():
        stored = storage.get_take(s, "alice", take.id)
    assert stored is not None and stored.request["preview"] == {"enabled": True, "max_side": 256}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.status = "completed"  # type: ignore[misc]


def test_records_from_writes_equal_records_from_reads(db: storage.Database,
                                                      project: storage.ProjectRecord) -> None:
    request = {**REQUEST, "prompt": "夜の街、ネオンの雨 🌃 — «ночь»", "negative_prompt": "色调艳丽"}
    with db.session() as s, s.begin():
        written = storage.add_take(s, "alice", project.id, request)
    with db.read_session() as s, s.begin():
        read = storage.get_take(s, "alice", written.id)
    assert read == written and read.request == request and read.prompt == request["prompt"]
    assert "夜の街" in read.request_json  # stored as text, not \u escapes


def test_input_image_is_copied_under_a_generated_name(db: storage.Database, project: storage.ProjectRecord,
                                                      tmp_path: Path) -> None:
    upload = tmp_path / "..evil name?.jpg"
    upload.write_bytes(png())
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST, image=str(upload))
    # the name is generated; the content decides the suffix
    assert re.fullmatch(rf"p{project.id}/t{take.id}/input-[0-9a-f]{{32}}\.png", take.image_path)
    assert db.media.resolve(take.image_path).read_bytes() == upload.read_bytes()


def test_a_bad_input_image_leaves_no_row_and_no_file(db: storage.Database, project: storage.ProjectRecord) -> None:
    with pytest.raises(storage.InvalidInputError, match="image"):
        with db.session() as s, s.begin():
            storage.add_take(s, "alice", project.id, REQUEST, image=b"%PDF-1.7 not an image")
    with db.read_session() as s, s.begin():
        assert storage.list_takes(s, "alice", project.id) == []
    assert list(db.media.root.iterdir()) == []


def test_takes_list_newest_first_with_pages_and_favourites(db: storage.Database,
                                                           project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        takes = [storage.add_take(s, "alice", project.id, {**REQUEST, "seed": i}) for i in range(7)]
        for take in takes[1::2]:
            storage.set_favourite(s, "alice", take.id, True)
        storage.set_favourite(s, "alice", takes[5].id, False)
    with db.read_session() as s, s.begin():
        first = storage.list_takes(s, "alice", project.id, limit=3)
        second = storage.list_takes(s, "alice", project.id, limit=3, offset=3)
        favourites = storage.list_takes(s, "alice", project.id, favourites_only=True)
    assert [t.seed for t in first] == [6, 5, 4] and [t.seed for t in second] == [3, 2, 1]
    assert [t.seed for t in favourites] == [3, 1]
    with db.session() as s, s.begin(), pytest.raises(storage.InvalidInputError, match="True or False"):
        storage.set_favourite(s, "alice", takes[0].id, 1)  # type: ignore[arg-type]


def test_missing_media_file_is_reported_not_hidden(db: storage.Database, project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    db.media.resolve(take.video_path).unlink()
    with db.read_session() as s, s.begin():
        listed = storage.list_takes(s, "alice", project.id)
        got = storage.get_take(s, "alice", take.id)
    assert [t.id for t in listed] == [take.id] and listed[0].media_missing
    assert got is not None and got.media_missing and got.video_path == take.video_path


def test_lineage_runs_from_the_first_take_to_this_one(db: storage.Database, project: storage.ProjectRecord) -> None:
    root = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        other = storage.create_project(s, "alice", "Elsewhere")
        remix = storage.add_take(s, "alice", project.id, REQUEST, parent_id=root.id, parent_kind="remix")
        cont = storage.add_take(s, "alice", other.id, REQUEST, parent_id=remix.id, parent_kind="continue")
        chain = storage.lineage(s, "alice", cont.id)
        alone = storage.lineage(s, "alice", root.id)
    assert [t.id for t in chain] == [root.id, remix.id, cont.id]
    assert [t.parent_kind for t in chain] == [None, "remix", "continue"]
    assert [t.id for t in alone] == [root.id]


@pytest.mark.parametrize("parent_kind, with_parent, message", [
    ("remix", False, "go together"),
    (None, True, "go together"),
    ("sequel", True, "remix, continue or extend"),
])
def test_bad_parent_links_are_refused(db: storage.Database, project: storage.ProjectRecord,
                                      parent_kind: str | None, with_parent: bool, message: str) -> None:
    root = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin(), pytest.raises(storage.InvalidInputError, match=message):
        storage.add_take(s, "alice", project.id, REQUEST,
                         parent_id=root.id if with_parent else None, parent_kind=parent_kind)


def test_deleting_a_take_removes_files_links_and_parent_pointers(
        db: storage.Database, project: storage.ProjectRecord) -> None:
    root = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        child = storage.add_take(s, "alice", project.id, REQUEST, parent_id=root.id, parent_kind="remix")
        link = storage.create_share_link(s, "alice", root.id)
    folder = db.media.take_dir(project.id, root.id)
    with pytest.raises(RuntimeError):  # a delete that rolls back keeps the files
        with db.session() as s, s.begin():
            storage.delete_take(s, "alice", root.id)
            raise RuntimeError("changed my mind")
    assert folder.is_dir()
    with db.session() as s, s.begin():
        storage.delete_take(s, "alice", root.id)
        assert folder.is_dir()  # files go only once the delete commits
    assert not folder.exists() and not db.media.project_dir(project.id).exists()
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "alice", root.id) is None
        assert storage.resolve_share_link(s, link.token) is None
        orphan = storage.get_take(s, "alice", child.id)
    assert orphan is not None and orphan.parent_id is None


def test_running_takes_and_their_projects_cannot_be_deleted(db: storage.Database,
                                                           project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
    with db.session() as s, s.begin():
        with pytest.raises(storage.TransitionError, match="cancel it"):
            storage.delete_take(s, "alice", take.id)
        with pytest.raises(storage.TransitionError, match="cancel it"):
            storage.delete_project(s, "alice", project.id)


def test_deleting_a_project_removes_its_takes_links_and_media(db: storage.Database,
                                                              project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        keep = storage.create_project(s, "alice", "Keep")
        kept = storage.add_take(s, "alice", keep.id, REQUEST, image=png())
        link = storage.create_share_link(s, "alice", take.id)
    with db.session() as s, s.begin():
        storage.delete_project(s, "alice", project.id)
    assert not db.media.project_dir(project.id).exists()
    assert db.media.resolve(kept.image_path).is_file()
    with db.read_session() as s, s.begin():
        assert storage.get_project(s, "alice", project.id) is None
        assert storage.resolve_share_link(s, link.token) is None
        assert s.scalar(select(func.count()).select_from(Take).where(Take.project_id == project.id)) == 0
        assert s.scalar(select(func.count()).select_from(Project)) == 1


def test_project_ids_are_never_reused(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        storage.delete_project(s, "alice", project.id)
    with db.session() as s, s.begin():
        again = storage.create_project(s, "alice", "Second")
    assert again.id > project.id


# Share links ------------------------------------------------------------------------------------


def test_share_links_open_one_take_for_anyone_until_revoked(db: storage.Database,
                                                            project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        link = storage.create_share_link(s, "alice", take.id)
        same = storage.create_share_link(s, "alice", take.id)
    assert same == link and link.active and link.take_id == take.id
    assert len(link.token) >= 43  # token_urlsafe(32): 256 random bits
    with db.read_session() as s, s.begin():
        shared = storage.resolve_share_link(s, link.token)
    assert shared is not None and shared.id == take.id and shared.owner == "alice"
    with db.session() as s, s.begin():
        with pytest.raises(storage.NotFoundError):
            storage.revoke_share_link(s, "mallory", link.token)
        revoked = storage.revoke_share_link(s, "alice", link.token)
        twice = storage.revoke_share_link(s, "alice", link.token)
    assert not revoked.active and twice.revoked_at == revoked.revoked_at
    with db.session() as s, s.begin():
        assert storage.resolve_share_link(s, link.token) is None
        fresh = storage.create_share_link(s, "alice", take.id)
        links = storage.list_share_links(s, "alice", take.id)
    assert fresh.token != link.token
    assert {x.token for x in links} == {link.token, fresh.token}


def test_share_tokens_are_distinct_and_random(db: storage.Database, project: storage.ProjectRecord) -> None:
    tokens = set()
    with db.session() as s, s.begin():
        for _ in range(20):
            take = storage.add_take(s, "alice", project.id, REQUEST)
            s.execute(text("UPDATE takes SET status = 'completed' WHERE id = :id"), {"id": take.id})
            tokens.add(storage.create_share_link(s, "alice", take.id).token)
    assert len(tokens) == 20
    alphabet = set("".join(tokens))
    assert len(alphabet) > 40  # base64url spread, not a counter or a hash of the id


@pytest.mark.parametrize("token", ["", "nope", "a" * 43, "../../etc/passwd", "x" * 10_000, None, 5,
                                   "tok%00", "Ω" * 43])
def test_unknown_or_malformed_tokens_resolve_to_nothing(db: storage.Database, token: object) -> None:
    with db.read_session() as s, s.begin():
        assert storage.resolve_share_link(s, token) is None  # type: ignore[arg-type]
    with db.session() as s, s.begin(), pytest.raises(storage.NotFoundError):
        storage.revoke_share_link(s, "alice", token)  # type: ignore[arg-type]


def test_only_completed_takes_can_be_shared(db: storage.Database, project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, REQUEST)
        with pytest.raises(storage.TransitionError, match="completed"):
            storage.create_share_link(s, "alice", take.id)


def test_records_outlive_their_session(db: storage.Database, project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    with db.read_session() as s, s.begin():
        listed = storage.list_takes(s, "alice", project.id)
    # plain values, usable after the session is gone (no detached-instance errors)
    assert listed == [take] and listed[0].prompt == REQUEST["prompt"]
    assert listed[0].queued_at.tzinfo is not None and isinstance(listed[0].request, dict)


# Owners, queue counts and cancel requests -------------------------------------------------------


def test_reads_create_no_rows_for_a_new_owner(db: storage.Database) -> None:
    with db.read_session() as s, s.begin():
        assert storage.get_default_project(s, "newcomer") is None
        assert storage.count_unfinished(s, "newcomer") == 0
        assert s.execute(text("SELECT count(*) FROM owners")).scalar() == 0
    with db.session() as s, s.begin():
        made = storage.get_or_create_default_project(s, "newcomer")
    with db.read_session() as s, s.begin():
        assert storage.get_default_project(s, "newcomer") == made


def test_moving_an_owner_carries_its_projects_and_takes(db: storage.Database,
                                                        project: storage.ProjectRecord) -> None:
    take = completed_take(db, "alice", project.id)
    with db.session() as s, s.begin():
        other = storage.create_project(s, "alice", "Second")
        assert storage.move_owner(s, "alice", "alice-new-key") == 2
    with db.read_session() as s, s.begin():
        assert storage.get_take(s, "alice", take.id) is None
        moved = storage.get_take(s, "alice-new-key", take.id)
        assert moved is not None and moved.project_id == project.id and not moved.media_missing
        assert {p.id for p in storage.list_projects(s, "alice-new-key")} == {project.id, other.id}
        assert storage.list_projects(s, "alice") == []
    # into an owner that already has projects: both sets end up together, the old key is gone
    with db.session() as s, s.begin():
        storage.create_project(s, "bob", "Bob's")
        storage.move_owner(s, "alice-new-key", "bob")
        assert s.execute(text("SELECT count(*) FROM owners WHERE key = 'alice-new-key'")).scalar() == 0
    with db.read_session() as s, s.begin():
        assert len(storage.list_projects(s, "bob")) == 3
        assert storage.get_take(s, "bob", take.id) is not None
        if db.engine.dialect.name == "sqlite":  # PostgreSQL checks references as it goes
            assert s.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    with db.session() as s, s.begin():
        assert storage.move_owner(s, "nobody", "bob") == 0


def test_cancel_requests_end_pending_takes_and_flag_running_ones(db: storage.Database,
                                                                 project: storage.ProjectRecord) -> None:
    with db.session() as s, s.begin():
        pending = storage.add_take(s, "alice", project.id, REQUEST)
        running = storage.start_take(s, "alice", storage.add_take(s, "alice", project.id, REQUEST).id)
        assert storage.count_unfinished(s, "alice") == 2
        assert storage.count_unfinished(s, "bob") == 0
    with db.session() as s, s.begin():
        with pytest.raises(storage.NotFoundError):
            storage.request_cancel(s, running.id, owner="bob")  # not bob's take
        gone = storage.request_cancel(s, pending.id, owner="alice")
        flagged = storage.request_cancel(s, running.id)  # an operator: any owner
    assert gone.status == "cancelled" and gone.error and "before it started" in gone.error
    assert flagged.status == "running" and flagged.cancel_requested
    with db.session() as s, s.begin():
        progress = storage.update_progress(s, "alice", running.id, 1, 4)
        assert progress.cancel_requested  # the run sees it with its next progress write
        assert storage.count_unfinished(s, "alice") == 1
        assert storage.find_take(s, running.id) == storage.get_take(s, "alice", running.id)


@pytest.mark.parametrize("take_id", [0, -1, 2**63, 10**30])
def test_ids_outside_the_database_range_are_refused_with_a_sentence(db: storage.Database,
                                                                    take_id: int) -> None:
    with db.read_session() as s, s.begin():
        with pytest.raises(storage.InvalidInputError, match="no take"):
            storage.get_take(s, "alice", take_id)
        with pytest.raises(storage.InvalidInputError, match="no take"):
            storage.find_take(s, take_id)


def test_an_owner_cannot_have_two_projects_of_one_name(db: storage.Database,
                                                        project: storage.ProjectRecord) -> None:
    with pytest.raises(storage.InvalidInputError, match="already have a project called"):
        with db.session() as s, s.begin():
            storage.create_project(s, "alice", "  alice's FILM ")  # case and spaces do not count
    with db.session() as s, s.begin():
        other = storage.create_project(s, "alice", "Second")
        storage.create_project(s, "bob", "Alice's film")  # another owner's names are theirs
        storage.rename_project(s, "alice", project.id, "ALICE'S FILM")  # its own name, recased
    with pytest.raises(storage.InvalidInputError, match="already have a project called"):
        with db.session() as s, s.begin():
            storage.rename_project(s, "alice", other.id, "alice's film")
