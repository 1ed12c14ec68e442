"""Project export to one zip and import into another data folder under a new owner."""

from __future__ import annotations

import dataclasses
import json
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


def refused(bad: Path, tmp_path: Path, migrated: Path, message: str) -> str:
    """Import `bad` into a fresh folder: refused with one sentence, and nothing left behind."""
    target = tmp_path / f"target-{len(list(tmp_path.glob('target-*')))}"
    with open_copy(target, migrated) as other:
        with pytest.raises(storage.InvalidInputError, match=message) as info:
            with other.session() as s, s.begin():
                storage.import_project(s, "bob", bad)
        with other.read_session() as s, s.begin():
            assert storage.list_projects(s, "bob") == []
        assert list(other.media.root.iterdir()) == []
    text = str(info.value)
    assert text.endswith(".") and "\n" not in text and len(text) < 400, text
    return text


def exported(source, tmp_path: Path) -> Path:
    """The source project's export."""
    db, project = source
    archive = tmp_path / "good.zip"
    with db.read_session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)
    return archive


@pytest.mark.parametrize("edit, drop, message", [
    (_set("format", "something-else"), None, "not a Wan Studio project export"),
    (_set("version", 99), None, "format version 99"),
    (_set("takes.0.status", "exploded"), None, "unknown status 'exploded'"),
    (_set("takes.0.request", {"prompt": "no variant"}), None, "variant"),
    (_set("takes.0.queued_at", "yesterday"), None, "not a date"),
    (_set("takes.0.step", -3), None, "bad step"),
    (_set("takes.1.key", 1), None, "distinct"),
    (_set("takes.0.files", {"script": "takes/1/video.mp4"}), None, "unknown files"),
    (_set("takes.0.files.video", "../../../../etc/passwd"), None, "points outside its own folder"),
    (_set("takes.0.files.video", "/etc/passwd"), None, "points outside its own folder"),
    (_set("takes.0.files.video", "takes"), None, "does not contain"),
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


@pytest.mark.parametrize("name", ["../../evil.mp4", "/tmp/evil.mp4", "takes/../../evil.mp4",
                                  "C:/evil.mp4", "takes\\1\\evil.mp4", "takes/./evil.mp4",
                                  "takes//evil.mp4", "takes/evil\x01.mp4"])
def test_zip_members_named_to_escape_are_refused(source, tmp_path: Path, migrated: Path,
                                                 name: str) -> None:
    """Even when nothing names them: a zip holding such a name was not made by the studio."""
    db, project = source
    archive = tmp_path / "good.zip"
    with db.read_session() as s, s.begin():
        storage.export_project(s, "alice", project.id, archive)

    def point_at_evil(manifest: dict) -> None:
        manifest["takes"][0]["files"]["video"] = name

    for edit in (None, point_at_evil):
        bad = _rewrite(archive, tmp_path / "evil.zip", edit, extra={name: MP4})
        refused(bad, tmp_path, migrated, "points outside its own folder")
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


# Bad zips, built here: each refused with one sentence, nothing written -------------------------

def _zip(path: Path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, compress_type=compress)
    return path


def _manifest(takes: list[dict]) -> bytes:
    return json.dumps({"format": "wan-studio-project", "version": 1,
                       "project": {"name": "Imported"}, "takes": takes}).encode()


def _take(key: int, **files: str) -> dict:
    return {"key": key, "request": REQUEST, "status": "completed", "files": files}


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path, migrated: Path) -> None:
    for text in (b"{not json", b"\xff\xfe\x00 binary", b"[" * 100_000):
        bad = _zip(tmp_path / "bad.zip", {"project.json": text})
        assert "project.json is not JSON" in refused(bad, tmp_path, migrated, "not JSON")
    bad = _zip(tmp_path / "bad.zip", {"project.json": b'["a list"]'})
    refused(bad, tmp_path, migrated, "not a Wan Studio project export")


def test_too_many_takes_are_refused(tmp_path: Path, migrated: Path, monkeypatch) -> None:
    from storage import transfer

    monkeypatch.setattr(transfer, "MAX_TAKES", 2)
    bad = _zip(tmp_path / "many.zip", {"project.json": _manifest([_take(k) for k in (1, 2, 3)])})
    assert "3 takes; one import takes at most 2" in refused(bad, tmp_path, migrated, "takes")


def test_a_zip_with_too_many_entries_is_refused(tmp_path: Path, migrated: Path, monkeypatch) -> None:
    from storage import transfer

    monkeypatch.setattr(transfer, "MAX_ENTRIES", 3)
    members = {"project.json": _manifest([])} | {f"junk/{i}": b"x" for i in range(3)}
    refused(_zip(tmp_path / "junk.zip", members), tmp_path, migrated, "4 entries")


def test_the_same_name_twice_is_refused(tmp_path: Path, migrated: Path) -> None:
    path = tmp_path / "twice.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("project.json", _manifest([_take(1, video="takes/1/video.mp4")]))
            archive.writestr("takes/1/video.mp4", MP4)
            archive.writestr("takes/1/video.mp4", b"\x00\x00\x00\x18ftypisom" + b"other" * 9)
    refused(path, tmp_path, migrated, "twice")


def test_a_zip_bomb_by_ratio_is_refused_before_anything_is_unpacked(tmp_path: Path, migrated: Path) -> None:
    """20 MB of zeros deflate to about 20 KB: no genuine export grows a thousandfold."""
    bomb = MP4 + bytes(20 * 1024 * 1024)
    bad = _zip(tmp_path / "bomb.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                       "takes/1/video.mp4": bomb}, compress=zipfile.ZIP_DEFLATED)
    assert bad.stat().st_size < 100_000
    assert "zip bomb" in refused(bad, tmp_path, migrated, "would grow")


def test_declared_sizes_past_the_limits_are_refused(source, tmp_path: Path, migrated: Path,
                                                     monkeypatch) -> None:
    from storage import transfer

    archive = exported(source, tmp_path)
    monkeypatch.setattr(transfer, "MAX_MEMBER_BYTES", len(MP4) - 1)  # the video is over, alone
    refused(archive, tmp_path, migrated, "is larger than")
    monkeypatch.undo()
    # one big member named by many takes counts once per take: 2 x MP4 > the total allowed
    twice = _zip(tmp_path / "twice.zip", {
        "project.json": _manifest([_take(1, video="takes/1/video.mp4"),
                                   _take(2, video="takes/1/video.mp4")]),
        "takes/1/video.mp4": MP4})
    monkeypatch.setattr(transfer, "MAX_IMPORT_BYTES", len(MP4) + 10)
    refused(twice, tmp_path, migrated, "one import copies at most")
    monkeypatch.setattr(transfer, "MAX_IMPORT_BYTES", 2 * len(MP4))
    with open_copy(tmp_path / "fits", migrated) as other, other.session() as s, s.begin():
        assert storage.import_project(s, "bob", twice).take_count == 2


def test_an_import_larger_than_the_free_disk_is_refused(source, tmp_path: Path, migrated: Path,
                                                        monkeypatch) -> None:
    from storage import transfer

    archive = exported(source, tmp_path)
    monkeypatch.setattr(transfer.shutil, "disk_usage",
                        lambda path: shutil_usage(total=10**12, used=10**12 - 1000, free=1000))
    assert "free some space" in refused(archive, tmp_path, migrated, "disk has")


def shutil_usage(total: int, used: int, free: int):
    import shutil

    return shutil._ntuple_diskusage(total, used, free)


def _patch_central_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size the central directory declares for `member`."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    at = data.rfind(b"PK\x01\x02" + b"", 0)
    while at != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + name_length] == name:
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return
        at = data.rfind(b"PK\x01\x02", 0, at)
    raise AssertionError(f"{member} not in the central directory")


def test_a_member_longer_than_its_header_says_is_never_read_past_it(tmp_path: Path, migrated: Path) -> None:
    """A header that understates the size: reading stops at the declared size, the CRC then
    fails, and the import is refused with nothing left (the caller's rollback)."""
    video = MP4 + bytes(range(256)) * 64
    bad = _zip(tmp_path / "liar.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                       "takes/1/video.mp4": video}, compress=zipfile.ZIP_DEFLATED)
    _patch_central_size(bad, "takes/1/video.mp4", 1000)
    assert "damaged" in refused(bad, tmp_path, migrated, "damaged")


def test_the_bounded_reader_stops_at_the_declared_size() -> None:
    import io

    from storage.transfer import _Bounded

    info = zipfile.ZipInfo("takes/1/video.mp4")
    info.file_size = 10
    reader = _Bounded(io.BytesIO(b"x" * 10), info)
    assert reader.read(4) + reader.read() == b"x" * 10 and reader.read() == b""
    with pytest.raises(storage.InvalidInputError, match="longer than its header says"):
        _Bounded(io.BytesIO(b"x" * 11), info).read()
    with pytest.raises(storage.InvalidInputError, match="longer than its header says"):
        chunked = _Bounded(io.BytesIO(b"x" * 11), info)
        while chunked.read(3):
            pass


def test_stored_sizes_that_disagree_are_refused(tmp_path: Path, migrated: Path) -> None:
    bad = _zip(tmp_path / "stored.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                         "takes/1/video.mp4": MP4})
    _patch_central_size(bad, "takes/1/video.mp4", len(MP4) - 5)
    refused(bad, tmp_path, migrated, "two different sizes")


def test_encrypted_or_foreign_compression_is_refused(tmp_path: Path, migrated: Path) -> None:
    bad = _zip(tmp_path / "bz2.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                      "takes/1/video.mp4": MP4}, compress=zipfile.ZIP_BZIP2)
    refused(bad, tmp_path, migrated, "compressed in a way Wan Studio does not write")
    plain = _zip(tmp_path / "plain.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                          "takes/1/video.mp4": MP4})
    data = bytearray(plain.read_bytes())
    at = data.rfind(b"PK\x01\x02")  # the last central entry: the video
    data[at + 8] |= 0x1  # "encrypted"
    plain.write_bytes(bytes(data))
    refused(plain, tmp_path, migrated, "encrypted")


def test_a_media_file_that_is_not_media_is_refused(tmp_path: Path, migrated: Path) -> None:
    bad = _zip(tmp_path / "script.zip", {"project.json": _manifest([_take(1, video="takes/1/video.mp4")]),
                                         "takes/1/video.mp4": b"#!/bin/sh\nrm -rf /\n"})
    refused(bad, tmp_path, migrated, "not a recognised MP4")


def test_takes_stored_as_recipes_round_trip(tmp_path: Path, migrated: Path) -> None:
    """The studio stores each take's recipe, with the request under "request"."""
    recipe = {"format": "wan-studio-recipe", "version": 1, "request": REQUEST, "user_prompt": "x"}
    path = _zip(tmp_path / "recipes.zip", {"project.json": _manifest([
        {"key": 1, "request": recipe, "status": "completed", "files": {}}])})
    with open_copy(tmp_path / "target", migrated) as other, other.session() as s, s.begin():
        project = storage.import_project(s, "bob", path)
        take = storage.list_takes(s, "bob", project.id)[0]
    assert take.variant == "i2v-a14b" and take.seed == 11 and take.request == recipe


def test_damaged_exports_are_refused_with_a_sentence_never_a_crash(source, tmp_path: Path,
                                                                   migrated: Path) -> None:
    """Cut short or with a byte changed anywhere (headers, manifest, media): a clean refusal, or
    an import that passes every check; never another exception, never a file left behind."""
    good = exported(source, tmp_path).read_bytes()
    cuts = [len(good) * k // 12 for k in range(1, 12)]
    flips = sorted({len(good) * k // 40 for k in range(40)} | {len(good) - k for k in range(1, 60, 7)})
    with open_copy(tmp_path / "target", migrated) as other:
        for index, damaged in enumerate([good[:cut] for cut in cuts] +
                                        [good[:at] + bytes([good[at] ^ 0x5A]) + good[at + 1:] for at in flips]):
            path = tmp_path / f"damaged-{index}.zip"
            path.write_bytes(damaged)
            try:
                with other.session() as s, s.begin():
                    project = storage.import_project(s, "bob", path)
            except storage.InvalidInputError:
                continue
            with other.session() as s, s.begin():  # it passed every check: remove it again
                storage.delete_project(s, "bob", project.id)
        with other.read_session() as s, s.begin():
            assert storage.list_projects(s, "bob") == []
        assert [p for p in other.media.root.rglob("*") if p.is_file()] == []


def test_end_images_shots_and_batches_survive_a_round_trip(tmp_path: Path, migrated: Path) -> None:
    db = open_copy(tmp_path / "source", migrated)
    with db.session() as s, s.begin():
        project = storage.create_project(s, "alice", "Shots")
        first = storage.add_take(s, "alice", project.id, REQUEST, image=png(), end_image=png(),
                                 starts_batch=True)
        second = storage.add_take(s, "alice", project.id, {**REQUEST, "seed": 12},
                                  batch_id=first.id)
        for take in (first, second):
            storage.start_take(s, "alice", take.id)
            storage.finish_take(s, "alice", take.id, "completed", video=MP4, poster=JPEG)
        child = storage.add_take(s, "alice", project.id, REQUEST, parent_id=first.id,
                                 parent_kind="extend")
        storage.start_take(s, "alice", child.id)
        storage.finish_take(s, "alice", child.id, "completed", video=MP4, poster=JPEG)
        storage.set_shot(s, child.id, MP4)
        archive = storage.export_project(s, "alice", project.id, tmp_path / "shots.zip")
    db.close()
    with open_copy(tmp_path / "target", migrated) as other, other.session() as s, s.begin():
        imported = storage.import_project(s, "bob", archive)
        a, b, c = reversed(storage.list_takes(s, "bob", imported.id))
        media = other.media
        assert a.end_image_path and media.exists(a.end_image_path)
        assert c.shot_path and media.resolve(c.shot_path).read_bytes() == MP4
        assert a.batch_id == a.id and b.batch_id == a.id, "the batch is kept"
        assert c.parent_id == a.id and c.parent_kind == "extend" and c.batch_id is None
