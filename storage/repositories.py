"""Projects, takes and share links: a Session in, frozen records out; the caller owns the transaction.

Every function but `resolve_share_link` is scoped by owner: another owner's project or take is
reported exactly as a missing one (`NotFoundError`, or None from `get_*`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, Text, delete, func, literal, select, type_coerce, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError, NotFoundError, TransitionError
from .media import MediaStore, Source
from .models import Owner, Project, ShareLink, Take, dump_json, utcnow
from .records import (
    PARENT_KINDS,
    TRANSITIONS,
    UNFINISHED,
    ProjectRecord,
    ShareLinkRecord,
    TakeRecord,
    TakeStatus,
)
from .validation import (
    MAX_PAGE,
    check_id,
    check_name,
    check_owner,
    check_page,
    check_request,
    clip_error,
    is_token_shaped,
)

DEFAULT_PROJECT_NAME = "My project"
INTERRUPTED_MESSAGE = "The studio stopped before this take finished; generate it again."
CANCELLED_BEFORE_START = "Cancelled before it started."
_LINEAGE_MAX_DEPTH = 10_000
_TAKES = Take.__table__
# Reads select plain rows (no identity map, no shared state), with the request left as JSON text.
_TAKE_ROW = select(*(type_coerce(c, Text).label("request") if c.key == "request" else c
                     for c in _TAKES.columns))

# Projects ---------------------------------------------------------------------------------------


def create_project(session: Session, owner: str, name: str) -> ProjectRecord:
    """A new, empty project named `name` (surrounding whitespace removed)."""
    owner, name = check_owner(owner), check_name(name)
    _ensure_owner(session, owner)
    now = utcnow()
    project = Project(owner=owner, name=name, created_at=now, updated_at=now)
    session.add(project)
    session.flush()
    return _project_record(project, 0)


def rename_project(session: Session, owner: str, project_id: int, name: str) -> ProjectRecord:
    """The project under its new name."""
    name = check_name(name)
    project = _project_row(session, owner, project_id)
    project.name = name
    project.updated_at = utcnow()
    session.flush()
    return get_project(session, owner, project.id)  # type: ignore[return-value]


def delete_project(session: Session, owner: str, project_id: int) -> None:
    """Delete a project, its takes and share links; its media folder goes once this commits."""
    project = _project_row(session, owner, project_id)
    busy = session.scalar(select(func.count()).select_from(Take).where(
        Take.project_id == project.id, Take.status.in_([s.value for s in UNFINISHED])))
    if busy:
        raise TransitionError("This project has a take still generating; cancel it before deleting the project.")
    session.execute(delete(Project).where(Project.id == project.id))
    filehooks.remove_after_commit(session, MediaStore.project_relative(project.id))


def get_project(session: Session, owner: str, project_id: int) -> ProjectRecord | None:
    """The owner's project, or None."""
    owner, project_id = check_owner(owner), check_id(project_id, "project")
    row = session.execute(
        select(Project, _take_count()).where(Project.id == project_id, Project.owner == owner)
    ).first()
    return None if row is None else _project_record(row[0], row[1])


def list_projects(session: Session, owner: str, limit: int = 50, offset: int = 0) -> list[ProjectRecord]:
    """The owner's projects, newest first, one page."""
    owner = check_owner(owner)
    limit, offset = check_page(limit, offset)
    rows = session.execute(
        select(Project, _take_count())
        .where(Project.owner == owner)
        .order_by(Project.created_at.desc(), Project.id.desc())
        .limit(limit).offset(offset)
    ).all()
    return [_project_record(project, count) for project, count in rows]


def get_default_project(session: Session, owner: str) -> ProjectRecord | None:
    """The owner's most recently updated project, or None for an owner with none (reads write nothing)."""
    owner = check_owner(owner)
    row = session.execute(
        select(Project, _take_count()).where(Project.owner == owner)
        .order_by(Project.updated_at.desc(), Project.id.desc()).limit(1)
    ).first()
    return None if row is None else _project_record(row[0], row[1])


def get_or_create_default_project(session: Session, owner: str) -> ProjectRecord:
    """The owner's most recently updated project, creating "My project" for a new owner (a write)."""
    return get_default_project(session, owner) or create_project(session, owner, DEFAULT_PROJECT_NAME)


def move_owner(session: Session, old: str, new: str) -> int:
    """Give every project (and so every take) of owner `old` to owner `new`; returns how many moved.

    Used when an owner's key changes (a signed-in account's key derivation was rotated). The key
    changes on the owners row itself where `new` has none yet, and the foreign keys' ON UPDATE
    CASCADE carries it through projects and takes in the same statement.
    """
    old, new = check_owner(old), check_owner(new)
    if old == new or session.get(Owner, old) is None:
        return 0
    moved = session.scalar(select(func.count()).select_from(Project).where(Project.owner == old))
    if session.get(Owner, new) is None:
        session.execute(update(Owner).where(Owner.key == old).values(key=new))
    else:
        session.execute(update(Project).where(Project.owner == old).values(owner=new))
        session.execute(delete(Owner).where(Owner.key == old))
    session.expire_all()
    return int(moved or 0)


# Takes ------------------------------------------------------------------------------------------


def add_take(
    session: Session,
    owner: str,
    project_id: int,
    request: Mapping[str, Any],
    parent_id: int | None = None,
    parent_kind: str | None = None,
    image: Source | None = None,
) -> TakeRecord:
    """A pending take holding the full request; `image` (PNG/JPEG/WebP) is copied into its folder."""
    clean = check_request(request)
    project = _project_row(session, owner, project_id)
    if (parent_id is None) != (parent_kind is None):
        raise InvalidInputError("A parent take and its kind (remix or continue) go together.")
    if parent_kind is not None and parent_kind not in PARENT_KINDS:
        raise InvalidInputError(f"The parent kind must be remix or continue, not {parent_kind!r}.")
    if parent_id is not None:
        _take_row(session, owner, parent_id, what="parent take")
    now = utcnow()
    take = Take(
        project_id=project.id, owner=project.owner, request=clean, variant=clean["variant"],
        seed=clean.get("seed"), prompt=clean.get("prompt", ""), status=TakeStatus.PENDING.value,
        step=0, queued_at=now, parent_id=parent_id, parent_kind=parent_kind, favourite=False,
    )
    session.add(take)
    project.updated_at = now
    session.flush()
    if image is not None:
        take.image_path = filehooks.stage(session, project.id, take.id, "image", image)
        session.flush()
    return _take_record(session, take)


def start_take(session: Session, owner: str, take_id: int) -> TakeRecord:
    """Mark a pending take running."""
    take = _take_row(session, owner, take_id)
    _move(take, TakeStatus.RUNNING)
    take.started_at = utcnow()
    session.flush()
    return _take_record(session, take)


def update_progress(session: Session, owner: str, take_id: int, step: int, total_steps: int) -> TakeRecord:
    """Record that a running take reached `step` of `total_steps`."""
    for name, value in (("step", step), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"Progress {name} must be a whole number.")
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise InvalidInputError(f"Progress must satisfy 0 <= step <= total_steps >= 1, got {step}/{total_steps}.")
    take = _take_row(session, owner, take_id)
    if take.status != TakeStatus.RUNNING.value:
        raise TransitionError(f"Only a running take reports progress; this one is {take.status}.")
    take.step, take.total_steps = step, total_steps
    session.flush()
    return _take_record(session, take)


def finish_take(
    session: Session,
    owner: str,
    take_id: int,
    status: str,
    error: str | None = None,
    video: Source | None = None,
    poster: Source | None = None,
) -> TakeRecord:
    """End a take as completed (with its MP4 and poster), failed or cancelled.

    The files are written first and the row second; if the transaction rolls back, the files
    written here are removed again.
    """
    try:
        target = TakeStatus(status)
    except ValueError:
        raise InvalidInputError(f"A take finishes as completed, failed or cancelled, not {status!r}.") from None
    if target not in (TakeStatus.COMPLETED, TakeStatus.FAILED, TakeStatus.CANCELLED):
        raise InvalidInputError(f"A take finishes as completed, failed or cancelled, not {status!r}.")
    if target is TakeStatus.COMPLETED and video is None:
        raise InvalidInputError("A completed take needs its video.")
    if target is not TakeStatus.COMPLETED and (video is not None or poster is not None):
        raise InvalidInputError("Only a completed take keeps a video or poster.")
    take = _take_row(session, owner, take_id)
    _move(take, target)
    if video is not None:
        take.video_path = filehooks.stage(session, take.project_id, take.id, "video", video)
    if poster is not None:
        take.poster_path = filehooks.stage(session, take.project_id, take.id, "poster", poster)
    take.finished_at = utcnow()
    if target is TakeStatus.COMPLETED and take.total_steps is not None:
        take.step = take.total_steps
    take.error = None if target is TakeStatus.COMPLETED else clip_error(
        error or ("The generation was cancelled." if target is TakeStatus.CANCELLED
                  else "The generation failed."))
    session.flush()
    return _take_record(session, take)


def set_favourite(session: Session, owner: str, take_id: int, favourite: bool) -> TakeRecord:
    """Mark or unmark a take as a favourite."""
    if not isinstance(favourite, bool):
        raise InvalidInputError("Favourite must be True or False.")
    take = _take_row(session, owner, take_id)
    take.favourite = favourite
    session.flush()
    return _take_record(session, take)


def delete_take(session: Session, owner: str, take_id: int) -> None:
    """Delete a finished take and its share links; its files go once this commits."""
    take = _take_row(session, owner, take_id)
    if take.status in [s.value for s in UNFINISHED]:
        raise TransitionError("This take is still generating; cancel it before deleting it.")
    session.execute(delete(Take).where(Take.id == take.id))
    filehooks.remove_after_commit(session, MediaStore.take_relative(take.project_id, take.id))


def get_take(session: Session, owner: str, take_id: int) -> TakeRecord | None:
    """The owner's take, or None."""
    owner, take_id = check_owner(owner), check_id(take_id, "take")
    row = session.execute(_TAKE_ROW.where(_TAKES.c.id == take_id, _TAKES.c.owner == owner)).first()
    return None if row is None else _row_record(row, filehooks.media_of(session), {})


def list_takes(
    session: Session,
    owner: str,
    project_id: int,
    limit: int = 50,
    offset: int = 0,
    favourites_only: bool = False,
) -> list[TakeRecord]:
    """The takes of the owner's project, newest first, one page (optionally favourites only)."""
    limit, offset = check_page(limit, offset)
    owner, project_id = check_owner(owner), check_id(project_id, "project")
    # Page through ids on the covering index first, so a deep offset skips index entries, not rows.
    page = select(_TAKES.c.id).where(_TAKES.c.project_id == project_id)
    if favourites_only:
        page = page.where(_TAKES.c.favourite.is_(True))
    page = page.order_by(_TAKES.c.id.desc()).limit(limit).offset(offset)
    rows = session.execute(
        _TAKE_ROW.where(_TAKES.c.id.in_(page.scalar_subquery()), _TAKES.c.owner == owner)
        .order_by(_TAKES.c.id.desc())).all()
    # Takes carry their project's owner, so rows prove ownership; only an empty page must ask.
    if not rows and session.scalar(
            select(Project.id).where(Project.id == project_id, Project.owner == owner)) is None:
        raise NotFoundError("That project was not found.")
    media, memo = filehooks.media_of(session), {}
    return [_row_record(row, media, memo) for row in rows]


def lineage(session: Session, owner: str, take_id: int) -> list[TakeRecord]:
    """The take's ancestors through remix/continue links, the oldest first and the take last."""
    owner, take_id = check_owner(owner), check_id(take_id, "take")
    start = (select(Take.id, Take.parent_id, literal(0).label("depth"))
             .where(Take.id == take_id, Take.owner == owner)
             .cte("ancestors", recursive=True))
    step = (select(Take.id, Take.parent_id, (start.c.depth + 1).label("depth"))
            .join(start, Take.id == start.c.parent_id)
            .where(Take.owner == owner, start.c.depth < _LINEAGE_MAX_DEPTH))
    ancestors = start.union_all(step)
    rows = session.execute(
        _TAKE_ROW.join(ancestors, _TAKES.c.id == ancestors.c.id).order_by(ancestors.c.depth.desc())
    ).all()
    if not rows:
        raise NotFoundError("That take was not found.")
    media, memo = filehooks.media_of(session), {}
    return [_row_record(row, media, memo) for row in rows]


def interrupt_unfinished(session: Session) -> list[int]:
    """Mark every pending or running take interrupted and remove its partial files (start-up only)."""
    media = filehooks.media_of(session)
    takes = session.scalars(
        select(Take).where(Take.status.in_([s.value for s in UNFINISHED])).order_by(Take.id)
    ).all()
    now = utcnow()
    for take in takes:
        # A partial file is never needed again, so it goes before the row changes.
        media.remove_take_files(take.project_id, take.id,
                                keep=tuple(p for p in (take.image_path,) if p))
        take.status = TakeStatus.INTERRUPTED.value
        take.video_path = take.poster_path = None
        take.finished_at = now
        take.error = INTERRUPTED_MESSAGE
    session.flush()
    return [take.id for take in takes]


def takes_with_stored_paths(session: Session, limit: int = MAX_PAGE) -> list[TakeRecord]:
    """Takes whose stored request still names a start image's path (written by older studios)."""
    limit, _ = check_page(limit, 0)
    holds_path = type_coerce(_TAKES.c.request, Text).like('%"image_path": "%')
    rows = session.execute(_TAKE_ROW.where(holds_path).order_by(_TAKES.c.id).limit(limit)).all()
    media, memo = filehooks.media_of(session), {}
    return [_row_record(row, media, memo) for row in rows]


def forget_stored_path(session: Session, take_id: int) -> TakeRecord:
    """Drop the start image's path from a take's stored request (the image itself stays)."""
    take_id = check_id(take_id, "take")
    take = session.get(Take, take_id)
    if take is None:
        raise NotFoundError("That take was not found.")
    take.request = {**take.request, "image_path": None}
    session.flush()
    return _take_record(session, take)


def count_unfinished(session: Session, owner: str) -> int:
    """How many of the owner's takes are pending or running (for the per-owner queue limit)."""
    owner = check_owner(owner)
    return int(session.scalar(select(func.count()).select_from(Take).where(
        Take.owner == owner, Take.status.in_([s.value for s in UNFINISHED]))) or 0)


def list_unfinished(session: Session, limit: int = MAX_PAGE) -> list[TakeRecord]:
    """Every owner's pending and running takes, oldest first (for operators)."""
    limit, _ = check_page(limit, 0)
    rows = session.execute(_TAKE_ROW.where(_TAKES.c.status.in_([s.value for s in UNFINISHED]))
                           .order_by(_TAKES.c.id).limit(limit)).all()
    media, memo = filehooks.media_of(session), {}
    return [_row_record(row, media, memo) for row in rows]


def find_take(session: Session, take_id: int) -> TakeRecord | None:
    """Any owner's take by id (operators, signed media links, the runner); None when missing."""
    take_id = check_id(take_id, "take")
    row = session.execute(_TAKE_ROW.where(_TAKES.c.id == take_id)).first()
    return None if row is None else _row_record(row, filehooks.media_of(session), {})


def request_cancel(session: Session, take_id: int, owner: str | None = None) -> TakeRecord:
    """Ask a take to stop: a pending one is cancelled at once, a running one at its next step.

    `owner=None` is an operator's cancel and reaches any take; a finished take is left as it is.
    """
    take_id = check_id(take_id, "take")
    if owner is None:
        take = session.get(Take, take_id)
        if take is None:
            raise NotFoundError("That take was not found.")
    else:
        take = _take_row(session, owner, take_id)
    if take.status == TakeStatus.PENDING.value:
        _move(take, TakeStatus.CANCELLED)
        take.finished_at = utcnow()
        take.error = CANCELLED_BEFORE_START
    elif take.status == TakeStatus.RUNNING.value:
        take.cancel_requested = True
    session.flush()
    return _take_record(session, take)


# Share links ------------------------------------------------------------------------------------


def create_share_link(session: Session, owner: str, take_id: int,
                      include_image: bool = False) -> ShareLinkRecord:
    """The completed take's active share link, made now (token_urlsafe(32)) if it has none.

    `include_image`: whether the page shows the take's start image (the live link takes the latest
    choice).
    """
    if not isinstance(include_image, bool):
        raise InvalidInputError("include_image must be True or False.")
    take = _take_row(session, owner, take_id)
    if take.status != TakeStatus.COMPLETED.value:
        raise TransitionError("Only a completed take can be shared.")
    link = session.scalar(
        select(ShareLink).where(ShareLink.take_id == take.id, ShareLink.revoked_at.is_(None))
        .order_by(ShareLink.created_at.desc()).limit(1))
    if link is None:
        link = ShareLink(token=secrets.token_urlsafe(32), take_id=take.id, created_at=utcnow(),
                         include_image=include_image)
        session.add(link)
    link.include_image = include_image
    session.flush()
    return _share_record(link)


def revoke_share_link(session: Session, owner: str, token: str) -> ShareLinkRecord:
    """Stop a share link of one of the owner's takes from working (revoking twice is fine)."""
    owner = check_owner(owner)
    link = None
    if is_token_shaped(token):
        link = session.scalar(
            select(ShareLink).join(Take, Take.id == ShareLink.take_id)
            .where(ShareLink.token == token, Take.owner == owner))
    if link is None:
        raise NotFoundError("That share link was not found.")
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        session.flush()
    return _share_record(link)


def list_share_links(session: Session, owner: str, take_id: int) -> list[ShareLinkRecord]:
    """Every share link of the owner's take, newest first, revoked ones included."""
    take = _take_row(session, owner, take_id)
    links = session.scalars(
        select(ShareLink).where(ShareLink.take_id == take.id)
        .order_by(ShareLink.created_at.desc(), ShareLink.token)).all()
    return [_share_record(link) for link in links]


def resolve_share_link(session: Session, token: str) -> TakeRecord | None:
    """The take a live share token opens, for anyone; None when unknown, malformed or revoked."""
    shared = resolve_share(session, token)
    return None if shared is None else shared[0]


def resolve_share(session: Session, token: str) -> tuple[TakeRecord, ShareLinkRecord] | None:
    """The take a live share token opens and the link itself (what the page may show)."""
    if not is_token_shaped(token):
        return None
    row = session.execute(
        _TAKE_ROW.add_columns(ShareLink.created_at.label("link_created_at"),
                              ShareLink.include_image.label("link_include_image"))
        .join(ShareLink, ShareLink.take_id == _TAKES.c.id)
        .where(ShareLink.token == token, ShareLink.revoked_at.is_(None))).first()
    if row is None:
        return None
    take = _row_record(row, filehooks.media_of(session), {})
    link = ShareLinkRecord(token=token, take_id=take.id, created_at=row.link_created_at,
                           revoked_at=None, include_image=bool(row.link_include_image))
    return take, link


# Helpers ----------------------------------------------------------------------------------------


def _ensure_owner(session: Session, owner: str) -> None:
    session.execute(sqlite_insert(Owner).values(key=owner, created_at=utcnow())
                    .on_conflict_do_nothing(index_elements=[Owner.key]))


def _project_row(session: Session, owner: str, project_id: int) -> Project:
    owner, project_id = check_owner(owner), check_id(project_id, "project")
    project = session.scalar(select(Project).where(Project.id == project_id, Project.owner == owner))
    if project is None:
        raise NotFoundError("That project was not found.")
    return project


def _take_row(session: Session, owner: str, take_id: int, what: str = "take") -> Take:
    owner, take_id = check_owner(owner), check_id(take_id, what)
    take = session.scalar(select(Take).where(Take.id == take_id, Take.owner == owner))
    if take is None:
        raise NotFoundError(f"That {what} was not found.")
    return take


def _move(take: Take, target: TakeStatus) -> None:
    current = TakeStatus(take.status)
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"A {current.value} take cannot become {target.value}.")
    take.status = target.value


def _take_count() -> Any:
    return (select(func.count(Take.id)).where(Take.project_id == Project.id)
            .correlate(Project).scalar_subquery().label("take_count"))


def _project_record(project: Project, take_count: int) -> ProjectRecord:
    return ProjectRecord(id=project.id, owner=project.owner, name=project.name,
                         created_at=project.created_at, updated_at=project.updated_at,
                         take_count=int(take_count))


def _take_record(session: Session, take: Take) -> TakeRecord:
    """The record of an ORM take (after a change); the request is copied, not shared."""
    values = {column.key: getattr(take, column.key) for column in _TAKES.columns}
    values["request"] = dump_json(take.request)
    return _record(values, filehooks.media_of(session), {})


def _row_record(row: Row[Any], media: MediaStore, memo: dict[str, int | None]) -> TakeRecord:
    """The record of a plain result row (reads skip the ORM; the request stays JSON text until used)."""
    return _record(row._mapping, media, memo)


def _record(values: Mapping[str, Any], media: MediaStore, memo: dict[str, int | None]) -> TakeRecord:
    paths = (values["video_path"], values["poster_path"], values["image_path"])
    return TakeRecord(
        id=values["id"], project_id=values["project_id"], owner=values["owner"],
        request_json=values["request"], variant=values["variant"], seed=values["seed"],
        prompt=values["prompt"], status=TakeStatus(values["status"]), error=values["error"],
        step=values["step"], total_steps=values["total_steps"], queued_at=values["queued_at"],
        started_at=values["started_at"], finished_at=values["finished_at"],
        video_path=paths[0], poster_path=paths[1], image_path=paths[2],
        parent_id=values["parent_id"], parent_kind=values["parent_kind"],
        favourite=bool(values["favourite"]), cancel_requested=bool(values["cancel_requested"]),
        media_missing=any(p is not None and not media.exists(p, memo) for p in paths),
    )


def _share_record(link: ShareLink) -> ShareLinkRecord:
    return ShareLinkRecord(token=link.token, take_id=link.take_id, created_at=link.created_at,
                           revoked_at=link.revoked_at, include_image=bool(link.include_image))
