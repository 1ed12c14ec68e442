"""Shared bits of the storage tests: media bytes with real signatures and a pre-migrated database."""

from __future__ import annotations

import contextlib
import io
import secrets
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from postgres_admin import admin_sql, with_database

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


# PostgreSQL -------------------------------------------------------------------------------------

POSTGRES_ENV = "WAN_STUDIO_TEST_DATABASE_URL"
NO_POSTGRES = (f"PostgreSQL is not running for the tests: `source .ci/postgres start` starts a "
               f"throwaway cluster and sets {POSTGRES_ENV} (.ci/run does)")


@pytest.fixture(scope="session")
def postgres_template() -> str:
    """A migrated PostgreSQL database to copy per test; skips when no server is configured."""
    import os

    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        pytest.skip(NO_POSTGRES)
    name = f"wan_template_{secrets.token_hex(4)}"
    admin_sql(admin, f'CREATE DATABASE "{name}"')
    storage.Database.open(Path(tempfile_dir()) / "template", url=with_database(admin, name)).close()
    yield name
    admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_database(template: str) -> Iterator[str]:
    """A fresh PostgreSQL database copied from the migrated template; its URL, dropped after."""
    import os

    admin = os.environ[POSTGRES_ENV]
    name = f"wan_test_{secrets.token_hex(6)}"
    admin_sql(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(admin, name)
    finally:
        admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_backend(backend: str, folder: Path, template: Path | str | None) -> Iterator[storage.Database]:
    """Open a fresh database of `backend` ("sqlite" or "postgresql") for `folder`'s media."""
    if backend == "sqlite":
        with open_copy(folder, template) as database:  # type: ignore[arg-type]
            yield database
        return
    with postgres_database(str(template)) as url:
        folder.mkdir(parents=True, exist_ok=True)
        with storage.Database.open(folder, url=url) as database:
            yield database


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="wan-pg-template-")
