"""What the subject modules share: the take row query, record builders, ownership checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, Text, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import filehooks
from .errors import NotFoundError, TransitionError
from .media import MediaStore
from .models import Owner, Project, ShareLink, Take, dump_json, utcnow
from .records import TRANSITIONS, ProjectRecord, ShareLinkRecord, TakeRecord, TakeStatus
from .validation import check_id, check_owner

TAKES = Take.__table__
# Reads select plain rows (no identity map, no shared state), with the request as JSON text
# (a CAST, so PostgreSQL's driver hands back text too rather than a parsed dict).
TAKE_ROW = select(*(cast(c, Text).label("request") if c.key == "request" else c
                    for c in TAKES.columns))


def ensure_owner(session: Session, owner: str) -> None:
    """Make the owner's row if it has none (an owner's rows appear with its first write)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Owner).values(key=owner, created_at=utcnow())
                    .on_conflict_do_nothing(index_elements=[Owner.key]))


def project_row(session: Session, owner: str, project_id: int) -> Project:
    owner, project_id = check_owner(owner), check_id(project_id, "project")
    project = session.scalar(select(Project).where(Project.id == project_id, Project.owner == owner))
    if project is None:
        raise NotFoundError("That project was not found.")
    return project


def take_row(session: Session, owner: str, take_id: int, what: str = "take") -> Take:
    owner, take_id = check_owner(owner), check_id(take_id, what)
    take = session.scalar(select(Take).where(Take.id == take_id, Take.owner == owner))
    if take is None:
        raise NotFoundError(f"That {what} was not found.")
    return take


def move(take: Take, target: TakeStatus) -> None:
    current = TakeStatus(take.status)
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"A {current.value} take cannot become {target.value}.")
    take.status = target.value


def take_count() -> Any:
    return (select(func.count(Take.id)).where(Take.project_id == Project.id)
            .correlate(Project).scalar_subquery().label("take_count"))


def project_record(project: Project, take_count: int) -> ProjectRecord:
    return ProjectRecord(id=project.id, owner=project.owner, name=project.name,
                         created_at=project.created_at, updated_at=project.updated_at,
                         take_count=int(take_count))


def take_record(session: Session, take: Take) -> TakeRecord:
    """The record of an ORM take (after a change); the request is copied, not shared."""
    values = {column.key: getattr(take, column.key) for column in TAKES.columns}
    values["request"] = dump_json(take.request)
    return record(values, filehooks.media_of(session), {})


def row_record(row: Row[Any], media: MediaStore, memo: dict[str, int | None]) -> TakeRecord:
    """The record of a plain result row (reads skip the ORM; the request stays JSON text until used)."""
    return record(row._mapping, media, memo)


def record(values: Mapping[str, Any], media: MediaStore, memo: dict[str, int | None]) -> TakeRecord:
    paths = (values["video_path"], values["poster_path"], values["image_path"],
             values["latents_path"], values["end_image_path"], values["shot_path"])
    return TakeRecord(
        id=values["id"], project_id=values["project_id"], owner=values["owner"],
        request_json=values["request"], variant=values["variant"], seed=values["seed"],
        prompt=values["prompt"], status=TakeStatus(values["status"]), error=values["error"],
        step=values["step"], total_steps=values["total_steps"], queued_at=values["queued_at"],
        started_at=values["started_at"], finished_at=values["finished_at"],
        video_path=paths[0], poster_path=paths[1], image_path=paths[2],
        parent_id=values["parent_id"], parent_kind=values["parent_kind"],
        favourite=bool(values["favourite"]), cancel_requested=bool(values["cancel_requested"]),
        worker=values["worker"], attempts=int(values["attempts"] or 0),
        latents_path=paths[3], batch_id=values["batch_id"], end_image_path=paths[4],
        shot_path=paths[5],
        media_missing=any(p is not None and not media.exists(p, memo) for p in paths),
    )


def share_record(link: ShareLink) -> ShareLinkRecord:
    return ShareLinkRecord(token=link.token, take_id=link.take_id, created_at=link.created_at,
                           revoked_at=link.revoked_at, include_image=bool(link.include_image))
