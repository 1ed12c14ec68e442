"""The media store: generated names, atomic writes, and stored paths that cannot escape."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from storage import InvalidInputError, MediaPathError, MediaStore
from storage.media import TEMP_PREFIX
from storage_support import jpeg, png

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(3000)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 200


@pytest.fixture
def media(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "data" / "media")


def test_write_uses_generated_names_and_relative_paths(media: MediaStore, tmp_path: Path) -> None:
    source = tmp_path / "..%2f..%2fpasswd video.MOV"
    source.write_bytes(MP4)
    relative = media.write(3, 17, "video", source)
    assert re.fullmatch(r"p3/t17/video-[0-9a-f]{32}\.mp4", relative)
    assert media.resolve(relative) == media.root / relative
    assert media.resolve(relative).read_bytes() == MP4
    assert re.fullmatch(r"p3/t17/poster-[0-9a-f]{32}\.jpg", media.write(3, 17, "poster", JPEG))
    assert re.fullmatch(r"p3/t17/input-[0-9a-f]{32}\.jpg", media.write(3, 17, "image", io.BytesIO(jpeg())))
    assert media.write(3, 17, "video", MP4) != relative  # never guessable from the ids


def test_names_carry_128_random_bits(media: MediaStore) -> None:
    names = {media.relative_for(1, 1, "video", ".mp4") for _ in range(200)}
    assert len(names) == 200


def test_writes_leave_only_finished_files(media: MediaStore) -> None:
    first = media.write(1, 1, "video", MP4)
    second = media.write(1, 1, "poster", JPEG)
    folder = media.take_dir(1, 1)
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.split("/")[-1], second.split("/")[-1]])
    assert media.resolve(first).read_bytes() == MP4


class BrokenStream(io.RawIOBase):
    """A source that fails part-way, as a disk or network read might."""

    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.sent:
            self.sent = True
            return MP4[:16]
        raise OSError("the source went away")


def test_a_write_that_fails_midway_leaves_no_file_behind(media: MediaStore) -> None:
    kept = media.write(1, 1, "video", MP4)
    with pytest.raises(OSError, match="went away"):
        media.write(1, 1, "video", BrokenStream())
    folder = media.take_dir(1, 1)
    assert [p.name for p in folder.iterdir()] == [kept.split("/")[-1]]
    assert media.resolve(kept).read_bytes() == MP4


@pytest.mark.parametrize("kind, content, message", [
    ("video", JPEG, "MP4"),
    ("poster", MP4, "JPG"),
    ("image", b"#!/bin/sh\nrm -rf /\n", "PNG"),
    ("image", b"", "PNG"),
    ("thumbnail", JPEG, "Unknown media kind"),
])
def test_wrong_content_is_refused_and_nothing_is_written(media: MediaStore, kind: str, content: bytes,
                                                         message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        media.write(1, 2, kind, content)  # type: ignore[arg-type]
    assert list(media.root.iterdir()) == []


@pytest.mark.parametrize("source", [12, None, ["a"]])
def test_sources_must_be_bytes_paths_or_streams(media: MediaStore, source: object) -> None:
    with pytest.raises(InvalidInputError, match="bytes, a file path or a binary stream"):
        media.write(1, 2, "video", source)  # type: ignore[arg-type]


def test_a_missing_or_folder_source_is_refused(media: MediaStore, tmp_path: Path) -> None:
    for source in (tmp_path / "absent.mp4", tmp_path):
        with pytest.raises(InvalidInputError, match="does not exist or is not a file"):
            media.write(1, 2, "video", source)


@pytest.mark.parametrize("stored", [
    "../studio.db",
    "p1/../../studio.db",
    "p1/t1/../../../../etc/passwd",
    "/etc/passwd",
    "C:/Windows/win.ini",
    "p1\\..\\..\\studio.db",
    "p1/t1/video.mp4\x00.png",
    "",
    ".",
    "p1//t1/video.mp4",
    "./p1/t1/video.mp4",
])
def test_stored_paths_cannot_escape_the_media_folder(media: MediaStore, stored: str) -> None:
    (media.root.parent / "studio.db").write_bytes(b"secret")
    with pytest.raises(MediaPathError):
        media.resolve(stored)
    assert media.exists(stored) is False


def test_symlinks_are_refused_wherever_they_point(media: MediaStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "video.mp4").write_bytes(MP4)
    (tmp_path / "secret.txt").write_text("secret")
    inside = media.write(3, 1, "video", MP4)
    (media.root / "p1").mkdir()
    (media.root / "p1" / "t1").symlink_to(outside, target_is_directory=True)
    (media.root / "p2").mkdir()
    (media.root / "p2" / "poster.jpg").symlink_to(tmp_path / "secret.txt")
    (media.root / "p9").symlink_to(media.root / "p3", target_is_directory=True)
    for stored in ("p1/t1/video.mp4", "p2/poster.jpg", inside.replace("p3/", "p9/")):
        with pytest.raises(MediaPathError, match="link"):
            media.resolve(stored)
        assert media.exists(stored) is False


def test_removal_of_a_take_keeps_what_is_asked_and_tidies_folders(media: MediaStore) -> None:
    image = media.write(4, 8, "image", jpeg())
    media.write(4, 8, "video", MP4)
    (media.take_dir(4, 8) / f"{TEMP_PREFIX}abc-video.mp4").write_bytes(b"partial")
    media.remove_take_files(4, 8, keep=(image,))
    assert [p.name for p in media.take_dir(4, 8).iterdir()] == [image.split("/")[-1]]
    media.remove_take_files(4, 8)
    assert not media.project_dir(4).exists()  # empty parents go too
    assert media.root.is_dir()


def test_removing_a_project_leaves_other_projects(media: MediaStore) -> None:
    media.write(1, 1, "video", MP4)
    other = media.write(2, 2, "video", MP4)
    media.remove_project_files(1)
    assert not media.project_dir(1).exists() and media.exists(other)


def test_remove_never_takes_anything_outside(media: MediaStore, tmp_path: Path) -> None:
    victim = tmp_path / "data" / "studio.db"
    victim.write_bytes(b"db")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (media.root / "p1").mkdir()
    (media.root / "p1" / "t1").symlink_to(outside, target_is_directory=True)
    for stored in ("../studio.db", "p1/..", "p1/t1", "p1/t1/keep.txt", "/"):
        with pytest.raises(MediaPathError):
            media.remove(stored)
    assert victim.exists() and (outside / "keep.txt").exists()
    assert media.root.is_dir()


def test_very_long_stored_paths_are_refused(media: MediaStore) -> None:
    with pytest.raises(MediaPathError, match="1024"):
        media.resolve("p1/" + "a" * 5000)


def test_sweep_removes_only_temporary_files(media: MediaStore) -> None:
    video = media.write(1, 1, "video", MP4)
    (media.take_dir(1, 1) / f"{TEMP_PREFIX}1-video.mp4").write_bytes(b"x")
    (media.take_dir(1, 1) / f"{TEMP_PREFIX}2-poster.jpg").write_bytes(b"x")
    assert media.sweep_temp_files() == 2
    assert [p.name for p in media.take_dir(1, 1).iterdir()] == [video.split("/")[-1]]


def test_media_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "media"
    blocker.write_text("a file")
    from storage import StorageError

    with pytest.raises(StorageError, match="Cannot create the media folder"):
        MediaStore(blocker)


def test_sweep_never_follows_links_out_of_the_folder(media: MediaStore, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / f"{TEMP_PREFIX}precious").write_text("not ours")
    (media.root / "p1").symlink_to(outside, target_is_directory=True)
    assert media.sweep_temp_files() == 0
    assert (outside / f"{TEMP_PREFIX}precious").exists()


def test_start_images_are_stored_without_metadata_and_upright(media: MediaStore) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0131] = "SecretCam 1.0"  # Software
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show it upright
    source = jpeg(exif=exif.tobytes())
    assert b"SecretCam" in source
    stored = media.resolve(media.write(1, 1, "image", source)).read_bytes()
    assert b"SecretCam" not in stored and b"PhoneMaker" not in stored and b"Exif" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and image.size == (8, 16)  # the rotation is in the pixels
        assert not image.getexif()
    text_png = io.BytesIO()
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at 51.5N 0.1W by alice")
    Image.open(io.BytesIO(png())).save(text_png, format="PNG", pnginfo=info)
    stored_png = media.resolve(media.write(1, 1, "image", text_png.getvalue())).read_bytes()
    assert b"alice" not in stored_png and stored_png.startswith(b"\x89PNG")


def test_an_oversized_start_image_is_refused_before_decoding(media: MediaStore) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 megapixels, a few KiB on disk
    with pytest.raises(InvalidInputError, match="megapixels"):
        media.write(1, 1, "image", buffer.getvalue())
    assert list(media.root.iterdir()) == []
