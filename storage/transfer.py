"""Export a project to one zip (takes as JSON plus their media) and import it under a new owner.

An import is checked before anything is written: the zip must open, every entry name must be
safe (no '..', no absolute or drive paths, no backslashes or control characters, no duplicates),
the manifest must be this format and version with at most MAX_TAKES takes, and every file it
names must be present, stored or deflated, unencrypted, and within the size limits (MAX_MEMBER_BYTES
each, MAX_IMPORT_BYTES together, at most MAX_RATIO times its compressed size, and what the disk
has free); every take entry must be valid too. Only then is anything written. While copying, a
member is never read past its declared size, and damaged contents (a bad CRC, a file that is not
the media it claims) stop the import. Anything wrong is one `InvalidInputError` sentence; for
damage found while copying, the caller's rollback removes the rows and files already written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import zipfile
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError
from .models import Project, Take, utcnow
from .records import PARENT_KINDS, UNFINISHED, ProjectRecord, TakeStatus
from .projects import get_project, unique_name
from .rows import ensure_owner, project_row
from .takes import INTERRUPTED_MESSAGE
from .validation import check_name, check_owner, check_request, clip_error, request_core

FORMAT = "wan-studio-project"
VERSION = 1
MANIFEST = "project.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_IMPORT_BYTES = 32 * 1024**3  # all the files an import copies, as their headers declare them
MAX_TAKES = 2000  # takes in one imported project
MAX_ENTRIES = 4 * MAX_TAKES + 64  # entries in the zip (three files a take, the manifest, folders)
# uncompressed / compressed: an export stores its media as they are (ratio 1) and deflates only
# project.json; deflate itself tops out near 1032, so a bigger claim is a bomb or a lie
MAX_RATIO = 200
_RATIO_FREE_BYTES = 1024 * 1024  # files up to this size may have any ratio (tiny, so harmless)
DISK_MARGIN_BYTES = 256 * 1024 * 1024  # left free on the media disk after an import
_KINDS = ("video", "poster", "image", "end_image", "shot")
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what export_project writes
_UNSAFE_PART = re.compile(r"^(|\.|\.\.)$")


def export_project(session: Session, owner: str, project_id: int, zip_path: str | os.PathLike[str]) -> Path:
    """Write the owner's project to `zip_path` (atomically) and return that path.

    The zip holds project.json (the project, every take's request, status, times and lineage)
    and the takes' media. Share links stay behind: they belong to this deployment.
    """
    project = project_row(session, owner, project_id)
    media = filehooks.media_of(session)
    takes = session.scalars(select(Take).where(Take.project_id == project.id).order_by(Take.id)).all()
    keys = {take.id: index for index, take in enumerate(takes, start=1)}
    # a batch is named by its earliest take still here (its first may have been deleted)
    batch_keys: dict[int, int] = {}
    for take in takes:
        if take.batch_id is not None:
            batch_keys.setdefault(take.batch_id, keys[take.id])
    entries, files = [], []
    for take in takes:
        key = keys[take.id]
        stored: dict[str, str] = {}
        for kind, relative in zip(_KINDS, (take.video_path, take.poster_path, take.image_path,
                                           take.end_image_path, take.shot_path)):
            if relative is not None and media.exists(relative):
                member = f"takes/{key}/{kind}{Path(relative).suffix}"
                stored[kind] = member
                files.append((member, media.resolve(relative)))
        entries.append({
            "key": key, "request": take.request, "status": take.status, "error": take.error,
            "step": take.step, "total_steps": take.total_steps,
            "queued_at": _iso(take.queued_at), "started_at": _iso(take.started_at),
            "finished_at": _iso(take.finished_at), "parent": keys.get(take.parent_id or -1),
            "parent_kind": take.parent_kind if take.parent_id in keys else None,
            "batch": batch_keys.get(take.batch_id) if take.batch_id is not None else None,
            "favourite": bool(take.favourite), "files": stored,
        })
    manifest = {
        "format": FORMAT, "version": VERSION,
        "project": {"name": project.name, "created_at": _iso(project.created_at),
                    "updated_at": _iso(project.updated_at)},
        "takes": entries,
    }
    target = Path(zip_path)
    if not target.parent.is_dir():
        raise InvalidInputError(f"Cannot write the export: the folder {target.parent} does not exist.")
    temp = target.with_name(f".tmp-{secrets.token_hex(8)}-{target.name}")
    try:
        with zipfile.ZipFile(temp, "x") as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1),
                             compress_type=zipfile.ZIP_DEFLATED)
            for member, path in files:  # MP4/JPEG/PNG are compressed already
                archive.write(path, member, compress_type=zipfile.ZIP_STORED)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def import_project(session: Session, owner: str, zip_path: str | os.PathLike[str]) -> ProjectRecord:
    """Create a project for `owner` from an export; its files are removed again on rollback.

    Takes that were still pending or running when exported arrive as interrupted. Member names
    in the zip are only looked up, never used as file names. Everything but the files' contents
    is checked before the first row or file is written (see the module docstring).
    """
    owner = check_owner(owner)
    archive = _open_archive(zip_path)
    with archive:
        _check_entries(archive)
        manifest = _read_manifest(archive)
        media = filehooks.media_of(session)
        info = manifest["project"]
        name = check_name(info.get("name"))
        created = _time(info.get("created_at"), "project created_at") or utcnow()
        updated = _time(info.get("updated_at"), "project updated_at") or utcnow()
        fields = [_take_fields(entry) for entry in manifest["takes"]]
        plan = _plan_files(archive, manifest["takes"], _size_of(zip_path), media.root)
        # checked: from here on only a damaged file's contents can still stop the import
        ensure_owner(session, owner)
        project = Project(owner=owner, name=unique_name(session, owner, name), created_at=created,
                          updated_at=updated)
        session.add(project)
        session.flush()
        new_ids: dict[int, int] = {}
        for entry, values in zip(manifest["takes"], fields):
            take = _take_from_entry(entry, values, project, new_ids)
            session.add(take)
            session.flush()
            new_ids[entry["key"]] = take.id
            batch = entry.get("batch")  # an earlier take's key (or its own): ignored otherwise
            if isinstance(batch, int) and not isinstance(batch, bool) and batch in new_ids:
                take.batch_id = new_ids[batch]
            for kind, member in plan[entry["key"]]:
                with _open_member(archive, member) as stream:
                    relative = filehooks.stage(session, project.id, take.id, kind, stream)
                setattr(take, f"{kind}_path", relative)
            session.flush()
    return get_project(session, owner, project.id)  # type: ignore[return-value]


def _open_archive(zip_path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """The zip, or one sentence: a damaged central directory raises many kinds of errors."""
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError,
            UnicodeError) as exc:
        raise InvalidInputError(f"This file is not a Wan Studio project export ({_reason(exc)}).") from None


def _check_entries(archive: zipfile.ZipFile) -> None:
    """Refuse a zip with too many entries, a name that could point anywhere else, or a name twice."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InvalidInputError(f"The export holds {len(infos):,} entries; a project export holds at "
                                f"most {MAX_ENTRIES:,}.")
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if not _safe_name(name.rstrip("/") if info.is_dir() else name):
            raise InvalidInputError(f"The export holds an entry named {_shown(name)}, which points outside "
                                    "its own folder; this zip was not made by Wan Studio.")
        if name in seen:
            raise InvalidInputError(f"The export holds {_shown(name)} twice; this zip was not made by "
                                    "Wan Studio.")
        seen.add(name)


def _safe_name(name: str) -> bool:
    """A relative, forward-slash name with no '.', '..' or empty parts and no control characters."""
    if not name or name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return False
    return not any(_UNSAFE_PART.match(part) for part in name.split("/"))


def _read_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise InvalidInputError("This zip is not a Wan Studio project export (no project.json).") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise InvalidInputError("The export's project.json is too large to be genuine.")
    _check_member(info)
    try:
        with _open_member(archive, info) as stream:
            manifest = json.loads(stream.read())
    except InvalidInputError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"The export's project.json is not JSON ({_reason(exc)}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError("This zip is not a Wan Studio project export.")
    if manifest.get("version") != VERSION:
        raise InvalidInputError(f"This export has format version {manifest.get('version')!r}; "
                                f"this studio reads version {VERSION}.")
    if not isinstance(manifest.get("project"), dict) or not isinstance(manifest.get("takes"), list):
        raise InvalidInputError("The export's project.json lacks its project or takes.")
    if len(manifest["takes"]) > MAX_TAKES:
        raise InvalidInputError(f"The export holds {len(manifest['takes']):,} takes; one import takes "
                                f"at most {MAX_TAKES:,}: split the project before exporting it.")
    seen: set[int] = set()
    for entry in manifest["takes"]:
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, bool) or not isinstance(key, int) or key in seen:
            raise InvalidInputError("The export's takes need distinct whole-number keys.")
        seen.add(key)
    return manifest


def _take_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """A take entry's checked values (all but its project and parent), or one sentence."""
    key = entry["key"]
    request = check_request(entry.get("request"))
    core = request_core(request)  # a recipe keeps the generation settings under "request"
    status = entry.get("status")
    if status not in {s.value for s in TakeStatus}:
        raise InvalidInputError(f"Take {key} of the export has an unknown status {_shown(status)}.")
    error = entry.get("error")
    if status in {s.value for s in UNFINISHED}:
        status, error = TakeStatus.INTERRUPTED.value, INTERRUPTED_MESSAGE
    step, total = entry.get("step", 0), entry.get("total_steps")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInputError(f"Take {key} of the export has a bad step {_shown(step)}.")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise InvalidInputError(f"Take {key} of the export has a bad step count {_shown(total)}.")
    return dict(
        request=request, variant=core["variant"], seed=core.get("seed"), prompt=core.get("prompt", ""),
        status=status, error=None if error is None else clip_error(error), step=step,
        total_steps=total,
        queued_at=_time(entry.get("queued_at"), f"take {key} queued_at") or utcnow(),
        started_at=_time(entry.get("started_at"), f"take {key} started_at"),
        finished_at=_time(entry.get("finished_at"), f"take {key} finished_at"),
        favourite=entry.get("favourite") is True,
    )


def _take_from_entry(entry: dict[str, Any], fields: dict[str, Any], project: Project,
                     new_ids: dict[int, int]) -> Take:
    """The new take of a checked entry; its parent only when that one came earlier in the file."""
    parent, parent_kind = entry.get("parent"), entry.get("parent_kind")
    parent_id = new_ids.get(parent) if isinstance(parent, int) else None
    if parent_id is None or parent_kind not in PARENT_KINDS:
        parent_id, parent_kind = None, None
    return Take(project_id=project.id, owner=project.owner, parent_id=parent_id,
                parent_kind=parent_kind, **fields)


def _plan_files(archive: zipfile.ZipFile, entries: list[dict[str, Any]], archive_bytes: int,
                media_root: Path) -> dict[int, list[tuple[str, zipfile.ZipInfo]]]:
    """Every take's files as (kind, zip entry), once every limit is checked, before any is copied."""
    plan: dict[int, list[tuple[str, zipfile.ZipInfo]]] = {}
    total = 0
    for entry in entries:
        files = entry.get("files") or {}
        if not isinstance(files, dict) or not set(files) <= set(_KINDS):
            raise InvalidInputError(f"Take {entry['key']} of the export lists unknown files.")
        chosen = []
        for kind, member in files.items():
            if not isinstance(member, str):
                raise InvalidInputError("The export names a file with something other than text.")
            if not _safe_name(member):
                raise InvalidInputError(f"The export names the file {_shown(member)}, which points outside "
                                        "its own folder; this zip was not made by Wan Studio.")
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise InvalidInputError(f"The export lists {_shown(member)} but does not contain it.") from None
            if info.is_dir():
                raise InvalidInputError(f"The export lists {_shown(member)} as a file, but it is a folder.")
            _check_member(info)
            total += info.file_size  # counted per use: one big entry named by every take adds up
            chosen.append((kind, info))
        plan[entry["key"]] = chosen
    if total > MAX_IMPORT_BYTES:
        raise InvalidInputError(f"The export's files come to {_gib(total)} GiB; one import copies at most "
                                f"{_gib(MAX_IMPORT_BYTES)} GiB.")
    if total > _RATIO_FREE_BYTES and total > MAX_RATIO * max(archive_bytes, 1):
        raise InvalidInputError(f"The export's files claim {_gib(total)} GiB from a {archive_bytes:,}-byte "
                                "zip, which no genuine export does (a zip bomb); it was refused.")
    try:
        free = shutil.disk_usage(media_root).free
    except OSError:
        free = None
    if free is not None and total + DISK_MARGIN_BYTES > free:
        raise InvalidInputError(f"The export needs {_gib(total)} GiB and the studio's disk has "
                                f"{_gib(free)} GiB free; free some space and import it again.")
    return plan


def _check_member(info: zipfile.ZipInfo) -> None:
    """One entry's declared sizes, compression and encryption, before it is opened."""
    name = _shown(info.filename)
    if info.flag_bits & 0x1:
        raise InvalidInputError(f"The export's {name} is encrypted; export the project again without a "
                                "password.")
    if info.compress_type not in _METHODS:
        raise InvalidInputError(f"The export's {name} is compressed in a way Wan Studio does not write "
                                f"(method {info.compress_type}); export the project again.")
    if info.file_size > MAX_MEMBER_BYTES:
        raise InvalidInputError(f"The export's {name} is larger than {_gib(MAX_MEMBER_BYTES)} GiB.")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise InvalidInputError(f"The export's {name} declares two different sizes; the zip is damaged.")
    if info.file_size > _RATIO_FREE_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise InvalidInputError(f"The export's {name} would grow {info.file_size // max(info.compress_size, 1):,} "
                                "times when unpacked, which no genuine export does (a zip bomb); it was "
                                "refused.")


class _Bounded:
    """A zip member's stream that never yields more than its declared size, and turns damage
    (bad CRC, broken deflate data, a short file) into one sentence."""

    def __init__(self, stream: BinaryIO, info: zipfile.ZipInfo) -> None:
        self._stream, self._left, self._name = stream, info.file_size, _shown(info.filename)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative), never past the declared size."""
        want = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        try:
            data = self._stream.read(want)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise InvalidInputError(f"The export's {self._name} is damaged ({_reason(exc)}).") from None
        if len(data) > self._left:  # zipfile stops at the declared size; this is the second lock
            raise InvalidInputError(f"The export's {self._name} is longer than its header says; the zip "
                                    "was refused.")
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        """Always: it is a stream to read."""
        return True

    def __enter__(self) -> "_Bounded":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.close()

    def close(self) -> None:
        """Close the member's stream."""
        self._stream.close()


def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Bounded:
    """A checked entry opened for reading, bounded by its declared size."""
    try:
        return _Bounded(archive.open(info), info)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, NotImplementedError,
            RuntimeError, struct.error) as exc:
        raise InvalidInputError(f"The export's {_shown(info.filename)} cannot be opened "
                                f"({_reason(exc)}).") from None


def _size_of(zip_path: str | os.PathLike[str]) -> int:
    try:
        return os.path.getsize(zip_path)
    except OSError:
        return 0


def _shown(name: Any, limit: int = 60) -> str:
    """A name from the zip as it may appear in a message: repr, cut to `limit` characters."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    """An exception as a short clause for a message."""
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f}".rstrip("0").rstrip(".")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"The export's {what} is not a date and time: {value!r}.") from None
    if parsed.tzinfo is None:
        raise InvalidInputError(f"The export's {what} has no timezone: {value!r}.")
    return parsed
