"""Shared bits of the storage tests: media bytes with real signatures and a pre-migrated database."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

import storage

# Enough of each format for storage, which only looks at the signature.
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 200


def jpeg(colour: tuple[int, int, int] = (200, 60, 10), exif: bytes | None = None) -> bytes:
    """A real 16x8 JPEG, with an EXIF block when given."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), colour).save(buffer, format="JPEG", **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def png(colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    """A real 8x8 PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly migrated studio.db to copy per test (running the migrations each time is slow)."""
    data = tmp_path_factory.mktemp("template")
    storage.Database.open(data).close()
    return data / "studio.db"


def open_copy(folder: Path, template: Path) -> storage.Database:
    """Open a new data folder whose studio.db starts as a copy of `template`."""
    folder.mkdir(parents=True)
    shutil.copyfile(template, folder / "studio.db")
    return storage.Database.open(folder)
