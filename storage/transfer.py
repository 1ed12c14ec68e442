"""Export a project to one zip (takes as JSON plus their media) and import it under a new owner."""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

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
_KINDS = ("video", "poster", "image")


def export_project(session: Session, owner: str, project_id: int, zip_path: str | os.PathLike[str]) -> Path:
    """Write the owner's project to `zip_path` (atomically) and return that path.

    The zip holds project.json (the project, every take's request, status, times and lineage)
    and the takes' media. Share links stay behind: they belong to this deployment.
    """
    project = project_row(session, owner, project_id)
    media = filehooks.media_of(session)
    takes = session.scalars(select(Take).where(Take.project_id == project.id).order_by(Take.id)).all()
    keys = {take.id: index for index, take in enumerate(takes, start=1)}
    entries, files = [], []
    for take in takes:
        key = keys[take.id]
        stored: dict[str, str] = {}
        for kind, relative in zip(_KINDS, (take.video_path, take.poster_path, take.image_path)):
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
    in the zip are only looked up, never used as file names.
    """
    owner = check_owner(owner)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"This file is not a Wan Studio project export ({exc}).") from exc
    with archive:
        manifest = _read_manifest(archive)
        info = manifest["project"]
        ensure_owner(session, owner)
        project = Project(owner=owner, name=unique_name(session, owner, check_name(info.get("name"))),
                          created_at=_time(info.get("created_at"), "project created_at") or utcnow(),
                          updated_at=_time(info.get("updated_at"), "project updated_at") or utcnow())
        session.add(project)
        session.flush()
        new_ids: dict[int, int] = {}
        for entry in manifest["takes"]:
            take = _take_from_entry(entry, project, new_ids)
            session.add(take)
            session.flush()
            new_ids[entry["key"]] = take.id
            files = entry.get("files") or {}
            if not isinstance(files, dict) or not set(files) <= set(_KINDS):
                raise InvalidInputError(f"Take {entry['key']} of the export lists unknown files.")
            for kind, member in files.items():
                with _open_member(archive, member) as stream:
                    relative = filehooks.stage(session, project.id, take.id, kind, stream)
                setattr(take, f"{kind}_path", relative)
            session.flush()
    return get_project(session, owner, project.id)  # type: ignore[return-value]


def _read_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise InvalidInputError("This zip is not a Wan Studio project export (no project.json).") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise InvalidInputError("The export's project.json is too large to be genuine.")
    try:
        manifest = json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"The export's project.json cannot be read ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError("This zip is not a Wan Studio project export.")
    if manifest.get("version") != VERSION:
        raise InvalidInputError(f"This export has format version {manifest.get('version')!r}; "
                                f"this studio reads version {VERSION}.")
    if not isinstance(manifest.get("project"), dict) or not isinstance(manifest.get("takes"), list):
        raise InvalidInputError("The export's project.json lacks its project or takes.")
    seen: set[int] = set()
    for entry in manifest["takes"]:
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, bool) or not isinstance(key, int) or key in seen:
            raise InvalidInputError("The export's takes need distinct whole-number keys.")
        seen.add(key)
    return manifest


def _take_from_entry(entry: dict[str, Any], project: Project, new_ids: dict[int, int]) -> Take:
    key = entry["key"]
    request = check_request(entry.get("request"))
    status = entry.get("status")
    if status not in {s.value for s in TakeStatus}:
        raise InvalidInputError(f"Take {key} of the export has an unknown status {status!r}.")
    error = entry.get("error")
    if status in {s.value for s in UNFINISHED}:
        status, error = TakeStatus.INTERRUPTED.value, INTERRUPTED_MESSAGE
    step, total = entry.get("step", 0), entry.get("total_steps")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInputError(f"Take {key} of the export has a bad step {step!r}.")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise InvalidInputError(f"Take {key} of the export has a bad step count {total!r}.")
    parent, parent_kind = entry.get("parent"), entry.get("parent_kind")
    parent_id = new_ids.get(parent) if isinstance(parent, int) else None
    if parent_id is None or parent_kind not in PARENT_KINDS:
        parent_id, parent_kind = None, None
    core = request_core(request)  # a recipe keeps the settings under "request"
    return Take(
        project_id=project.id, owner=project.owner, request=request, variant=core["variant"],
        seed=core.get("seed"), prompt=core.get("prompt", ""), status=status,
        error=None if error is None else clip_error(error), step=step, total_steps=total,
        queued_at=_time(entry.get("queued_at"), f"take {key} queued_at") or utcnow(),
        started_at=_time(entry.get("started_at"), f"take {key} started_at"),
        finished_at=_time(entry.get("finished_at"), f"take {key} finished_at"),
        parent_id=parent_id, parent_kind=parent_kind, favourite=entry.get("favourite") is True,
    )


def _open_member(archive: zipfile.ZipFile, member: Any) -> Any:
    if not isinstance(member, str):
        raise InvalidInputError("The export names a file with something other than text.")
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise InvalidInputError(f"The export lists {member!r} but does not contain it.") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise InvalidInputError(f"The export's {member!r} is larger than 4 GiB.")
    return archive.open(info)


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
