"""Project export to one zip and import into another data folder under a new owner."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import pytest
from storage_support import MP4, JPEG, migrated, open_copy, png  # noqa: F401 (migrated: fixture)

import storage

REQUEST = {"variant": "i2v-a14b", "prompt": "a lantern drifts 🏮 over water", "seed": 11, "steps": 6}


@pytest.fixture
def source(tmp_path: Path, migrated: Path):
    """Alice's project: a finished take with all media, a remix of it, a failed and a running one."""
    db = open_copy(tmp_path / "source", migrated)
    with db.session() as s, s.begin():
        project = storage.create_project(s, "alice", "Lanterns ✨ فوانيس")
        first = storage.add_take(s, "alice", project.id, REQUEST, image=png())
        storage.start_take(s, "alice", first.id)
        storage.update_progress(s, "alice", first.id, 6, 6)
        storage.finish_take(s, "alice", first.id, "completed", video=MP4, poster=JPEG)
        storage.set_favourite(s, "alice", first.id, True)
        remix = storage.add_take(s, "alice", project.id, {**REQUEST, "seed": 12},
                                 parent_id=first.id, parent_kind="remix")
        storage.start_take(s, "alice", remix.id)
        storage.finish_take(s, "alice", remix.id, "failed", error="Out of GPU memory at 1280x720.")
        running = storage.add_take(s, "alice", project.id, {**REQUEST, "seed": 13},
                                   parent_id=remix.id, parent_kind="continue")
        storage.start_take(s, "alice", running.id)
        storage.create_project(s, "alice", "Other project")
    yield db, project
    db.close()


def comparable(take: storage.TakeRecord) -> dict:
    """What must survive a round trip: everything but ids, owner and where files live."""
    data = dataclasses.asdict(take) | {"request": take.request}
    for key in ("id", "project_id", "owner", "parent_id", "video_path", "poster_path", "image_path",
                "request_json"):
        data.pop(key)
    return data


def test_export_then_import_loses_nothing(source, tmp_path: Path, migrated: Path) -> None:
    db, project = source
    archive = tmp_path / "lanterns.zip"
    with db.read_session() as s, s.begin():
        assert storage.export_project(s, "alice", project.id, archive) == archive
        originals = list(reversed(storage.list_takes(s, "alice", project.id)))
    assert zipfile.is_zipfile(archive) and not list(tmp_path.glob(".tmp-*"))

    with open_copy(tmp_path / "target", migrated) as other, other.session() as s, s.begin():
        imported = storage.import_project(s, "bob", archive)
        takes = list(reversed(storage.list_takes(s, "bob", imported.id)))
        assert storage.list_projects(s, "alice") == []  # nothing arrives under the old owner
        media = other.media

    assert imported.owner == "bob" and imported.name == project.name and imported.take_count == 3
    assert imported.created_at == project.created_at
    assert len(takes) == 3
    for before, after in zip(originals, takes):
        expected = comparable(before)
        if before.status == "running":  # nothing is running it in the new folder
            expected.update(status=storage.TakeStatus.INTERRUPTED, error=after.error,
                            finished_at=after.finished_at)
        assert comparable(after) == expected
        for name in ("video_path", "poster_path", "image_path"):
            if getattr(before, name) is None:
                assert getattr(after, name) is None
            else:
                assert media.resolve(getattr(after, name)).read_bytes() == \
                    db.media.resolve(getattr(before, name)).read_bytes()
    assert takes[1].parent_id == takes[0].id and takes[2].parent_id == takes[1].id
    assert takes[2].status == "interrupted" and "stopped" in (takes[2].error or "")
    assert all(t.owner == "bob" and not t.media_missing for t in takes)


def test_import_into_the_same_folder_makes_a_separate_copy(source, tmp_path: Path) -> None:
    db, project = source
    archive = tmp_path / "copy.zip"
    with db.session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)
        copy = storage.import_project(s, "alice", archive)
    assert copy.id != project.id
    with db.session() as s, s.begin():
        storage.delete_project(s, "alice", copy.id)
        assert storage.get_project(s, "alice", project.id) is not None
        assert all(not t.media_missing for t in storage.list_takes(s, "alice", project.id))


def _rewrite(archive: Path, out: Path, manifest_edit=None, drop: str | None = None,
             extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename == drop:
                continue
            data = src.read(info)
            if info.filename == "project.json" and manifest_edit is not None:
                manifest = json.loads(data)
                manifest_edit(manifest)
                data = json.dumps(manifest).encode()
            dst.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return out


def _set(path: str, value):
    def edit(manifest: dict) -> None:
        target = manifest
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, drop, message", [
    (_set("format", "something-else"), None, "not a Wan Studio project export"),
    (_set("version", 99), None, "format version 99"),
    (_set("takes.0.status", "exploded"), None, "unknown status 'exploded'"),
    (_set("takes.0.request", {"prompt": "no variant"}), None, "variant"),
    (_set("takes.0.queued_at", "yesterday"), None, "not a date"),
    (_set("takes.0.step", -3), None, "bad step"),
    (_set("takes.1.key", 1), None, "distinct"),
    (_set("takes.0.files", {"script": "takes/1/video.mp4"}), None, "unknown files"),
    (_set("takes.0.files.video", "../../../../etc/passwd"), None, "does not contain"),
    (_set("takes.0.files.video", "takes/1/poster.jpg"), None, "MP4"),
    (_set("project.name", "bad\x00name"), None, "control character"),
    (None, "takes/1/video.mp4", "does not contain"),
    (None, "project.json", "no project.json"),
])
def test_bad_exports_are_refused_and_leave_nothing_behind(source, tmp_path: Path, migrated: Path,
                                                          edit, drop, message: str) -> None:
    db, project = source
    archive = tmp_path / "good.zip"
    with db.read_session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)
    bad = _rewrite(archive, tmp_path / "bad.zip", edit, drop)
    with open_copy(tmp_path / "target", migrated) as other:
        with pytest.raises(storage.InvalidInputError, match=message):
            with other.session() as s, s.begin():
                storage.import_project(s, "bob", bad)
        with other.read_session() as s, s.begin():
            assert storage.list_projects(s, "bob") == []
        assert list(other.media.root.iterdir()) == []
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"plain text, not a zip"])
def test_files_that_are_not_zips_are_refused(tmp_path: Path, migrated: Path, content: bytes) -> None:
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    with open_copy(tmp_path / "target", migrated) as db, db.session() as s, s.begin():
        with pytest.raises(storage.InvalidInputError, match="not a Wan Studio project export"):
            storage.import_project(s, "bob", path)


def test_zip_members_named_to_escape_are_never_written(source, tmp_path: Path, migrated: Path) -> None:
    db, project = source
    archive = tmp_path / "good.zip"
    with db.read_session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)

    def point_at_evil(manifest: dict) -> None:
        manifest["takes"][0]["files"]["video"] = "../../evil.mp4"

    bad = _rewrite(archive, tmp_path / "evil.zip", point_at_evil, extra={"../../evil.mp4": MP4})
    with open_copy(tmp_path / "target", migrated) as other, other.session() as s, s.begin():
        imported = storage.import_project(s, "bob", bad)
        first = storage.list_takes(s, "bob", imported.id)[-1]
    assert re.fullmatch(rf"p{imported.id}/t{first.id}/video-[0-9a-f]{{32}}\.mp4", first.video_path)
    assert not (tmp_path / "evil.mp4").exists() and not (tmp_path.parent / "evil.mp4").exists()


def test_export_of_a_missing_file_still_exports_the_take(source, tmp_path: Path, migrated: Path) -> None:
    db, project = source
    with db.read_session() as s, s.begin():
        first = storage.list_takes(s, "alice", project.id)[-1]
    db.media.resolve(first.poster_path).unlink()
    archive = tmp_path / "partial.zip"
    with db.read_session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)
    with open_copy(tmp_path / "target", migrated) as other, other.session() as s, s.begin():
        imported = storage.import_project(s, "bob", archive)
        again = storage.list_takes(s, "bob", imported.id)[-1]
    assert again.poster_path is None and again.video_path is not None and not again.media_missing


def test_export_into_a_missing_folder_is_a_clear_error(source, tmp_path: Path) -> None:
    db, project = source
    with db.read_session() as s, s.begin(), pytest.raises(storage.InvalidInputError, match="does not exist"):
        storage.export_project(s, "alice", project.id, tmp_path / "no" / "such" / "folder.zip")
