"""Takes: a Session in, frozen records out; the caller owns the transaction.

Every function is scoped by owner: another owner's take is reported exactly as a missing one
(`NotFoundError`, or None from `get_take`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Text, cast, delete, literal, select
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError, NotFoundError, TransitionError
from .media import MediaStore, Source
from .models import Project, Take, utcnow
from .records import PARENT_KINDS, UNFINISHED, TakeRecord, TakeStatus
from .rows import TAKE_ROW, TAKES, move, project_row, row_record, take_record, take_row
from .validation import (
    MAX_PAGE,
    check_id,
    check_owner,
    check_page,
    check_request,
    clip_error,
    request_core,
)

INTERRUPTED_MESSAGE = "The studio stopped before this take finished; generate it again."
_LINEAGE_MAX_DEPTH = 10_000


def add_take(
    session: Session,
    owner: str,
    project_id: int,
    request: Mapping[str, Any],
    parent_id: int | None = None,
    parent_kind: str | None = None,
    image: Source | None = None,
    batch_id: int | None = None,
    starts_batch: bool = False,
    end_image: Source | None = None,
) -> TakeRecord:
    """A pending take holding the full request; `image` (PNG/JPEG/WebP) is copied into its folder.

    Variations: the first take of a batch `starts_batch` (its own id becomes the batch's), the
    others name it as `batch_id`.
    """
    clean = check_request(request)
    project = project_row(session, owner, project_id)
    if (parent_id is None) != (parent_kind is None):
        raise InvalidInputError("A parent take and its kind (remix, continue or extend) go together.")
    if parent_kind is not None and parent_kind not in PARENT_KINDS:
        raise InvalidInputError(f"The parent kind must be remix, continue or extend, not {parent_kind!r}.")
    if parent_id is not None:
        take_row(session, owner, parent_id, what="parent take")
    if batch_id is not None and take_row(session, owner, batch_id, what="batch").batch_id != batch_id:
        raise InvalidInputError("A variation must belong to a batch of the same owner.")
    now = utcnow()
    core = request_core(clean)
    take = Take(
        project_id=project.id, owner=project.owner, request=clean, variant=core["variant"],
        seed=core.get("seed"), prompt=core.get("prompt", ""), status=TakeStatus.PENDING.value,
        step=0, queued_at=now, parent_id=parent_id, parent_kind=parent_kind, favourite=False,
        batch_id=batch_id,
    )
    session.add(take)
    project.updated_at = now
    session.flush()
    if starts_batch:
        take.batch_id = take.id
    if image is not None:
        take.image_path = filehooks.stage(session, project.id, take.id, "image", image)
    if end_image is not None:
        take.end_image_path = filehooks.stage(session, project.id, take.id, "end_image", end_image)
    session.flush()
    return take_record(session, take)


def set_shot(session: Session, take_id: int, shot: Source) -> TakeRecord:
    """Store the assembled shot of a completed take (an extension), replacing an older one."""
    take = session.get(Take, check_id(take_id, "take"))
    if take is None:
        raise NotFoundError(f"Take {take_id} does not exist.")
    if take.status != TakeStatus.COMPLETED.value:
        raise TransitionError(f"Only a completed take gets a shot; this one is {take.status}.")
    if take.shot_path:
        filehooks.remove_after_commit(session, take.shot_path)
    take.shot_path = filehooks.stage(session, take.project_id, take.id, "shot", shot)
    session.flush()
    return take_record(session, take)


def start_take(session: Session, owner: str, take_id: int) -> TakeRecord:
    """Mark a pending take running."""
    take = take_row(session, owner, take_id)
    move(take, TakeStatus.RUNNING)
    take.started_at = utcnow()
    session.flush()
    return take_record(session, take)


def update_progress(session: Session, owner: str, take_id: int, step: int, total_steps: int) -> TakeRecord:
    """Record that a running take reached `step` of `total_steps`."""
    for name, value in (("step", step), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"Progress {name} must be a whole number.")
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise InvalidInputError(f"Progress must satisfy 0 <= step <= total_steps >= 1, got {step}/{total_steps}.")
    take = take_row(session, owner, take_id)
    if take.status != TakeStatus.RUNNING.value:
        raise TransitionError(f"Only a running take reports progress; this one is {take.status}.")
    take.step, take.total_steps = step, total_steps
    session.flush()
    return take_record(session, take)


def finish_take(
    session: Session,
    owner: str,
    take_id: int,
    status: str,
    error: str | None = None,
    video: Source | None = None,
    poster: Source | None = None,
    latents: Source | None = None,
) -> TakeRecord:
    """End a take as completed (with its MP4 and poster), failed (with the latents a failed
    decode kept, if any) or cancelled.

    The files are written first and the row second; if the transaction rolls back, the files
    written here are removed again. A take completed by decoding kept latents loses them.
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
    if latents is not None and target is not TakeStatus.FAILED:
        raise InvalidInputError("Only a failed take keeps latents to decode again.")
    take = take_row(session, owner, take_id)
    move(take, target)
    if latents is not None:
        take.latents_path = filehooks.stage(session, take.project_id, take.id, "latents", latents)
    elif take.latents_path and target is not TakeStatus.FAILED:
        filehooks.remove_after_commit(session, take.latents_path)  # decoded, or given up on
        take.latents_path = None
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
    return take_record(session, take)


def set_favourite(session: Session, owner: str, take_id: int, favourite: bool) -> TakeRecord:
    """Mark or unmark a take as a favourite."""
    if not isinstance(favourite, bool):
        raise InvalidInputError("Favourite must be True or False.")
    take = take_row(session, owner, take_id)
    take.favourite = favourite
    session.flush()
    return take_record(session, take)


def delete_take(session: Session, owner: str, take_id: int) -> None:
    """Delete a finished take and its share links; its files go once this commits."""
    take = take_row(session, owner, take_id)
    if take.status in [s.value for s in UNFINISHED]:
        raise TransitionError("This take is still generating; cancel it before deleting it.")
    _drop_shots_through(session, take)
    session.execute(delete(Take).where(Take.id == take.id))
    filehooks.remove_after_commit(session, MediaStore.take_relative(take.project_id, take.id))


def _drop_shots_through(session: Session, take: Take) -> None:
    """Remove the assembled shots that hold a take being deleted: those of the extensions that
    grew from it (its frames and recipe are in them). Each extension keeps its own video."""
    frontier, seen = [take.id], {take.id}
    while frontier:
        children = session.scalars(select(Take).where(Take.parent_id.in_(frontier),
                                                      Take.parent_kind == "extend")).all()
        frontier = [child.id for child in children if child.id not in seen]
        seen.update(frontier)
        for child in children:
            if child.shot_path:
                filehooks.remove_after_commit(session, child.shot_path)
                child.shot_path = None


def get_take(session: Session, owner: str, take_id: int) -> TakeRecord | None:
    """The owner's take, or None."""
    owner, take_id = check_owner(owner), check_id(take_id, "take")
    row = session.execute(TAKE_ROW.where(TAKES.c.id == take_id, TAKES.c.owner == owner)).first()
    return None if row is None else row_record(row, filehooks.media_of(session), {})


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
    page = select(TAKES.c.id).where(TAKES.c.project_id == project_id)
    if favourites_only:
        page = page.where(TAKES.c.favourite.is_(True))
    page = page.order_by(TAKES.c.id.desc()).limit(limit).offset(offset)
    rows = session.execute(
        TAKE_ROW.where(TAKES.c.id.in_(page.scalar_subquery()), TAKES.c.owner == owner)
        .order_by(TAKES.c.id.desc())).all()
    # Takes carry their project's owner, so rows prove ownership; only an empty page must ask.
    if not rows and session.scalar(
            select(Project.id).where(Project.id == project_id, Project.owner == owner)) is None:
        raise NotFoundError("That project was not found.")
    media, memo = filehooks.media_of(session), {}
    return [row_record(row, media, memo) for row in rows]


def batch_takes(session: Session, owner: str, batch_id: int) -> list[TakeRecord]:
    """The owner's takes of one batch of variations, oldest first (empty for none)."""
    owner, batch_id = check_owner(owner), check_id(batch_id, "batch")
    rows = session.execute(TAKE_ROW.where(TAKES.c.batch_id == batch_id, TAKES.c.owner == owner)
                           .order_by(TAKES.c.id)).all()
    media, memo = filehooks.media_of(session), {}
    return [row_record(row, media, memo) for row in rows]


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
        TAKE_ROW.join(ancestors, TAKES.c.id == ancestors.c.id).order_by(ancestors.c.depth.desc())
    ).all()
    if not rows:
        raise NotFoundError("That take was not found.")
    media, memo = filehooks.media_of(session), {}
    return [row_record(row, media, memo) for row in rows]


def takes_with_stored_paths(session: Session, limit: int = MAX_PAGE) -> list[TakeRecord]:
    """Takes whose stored request still names a start image's path (written by older studios)."""
    limit, _ = check_page(limit, 0)
    holds_path = cast(TAKES.c.request, Text).like('%"image_path": "%')
    rows = session.execute(TAKE_ROW.where(holds_path).order_by(TAKES.c.id).limit(limit)).all()
    media, memo = filehooks.media_of(session), {}
    return [row_record(row, media, memo) for row in rows]


def forget_stored_path(session: Session, take_id: int) -> TakeRecord:
    """Drop the start image's path from a take's stored request (the image itself stays)."""
    take_id = check_id(take_id, "take")
    take = session.get(Take, take_id)
    if take is None:
        raise NotFoundError("That take was not found.")
    take.request = {**take.request, "image_path": None}
    session.flush()
    return take_record(session, take)
