"""The queue: takes waiting or running, cancel requests, and what operators see.

A take is a job: pending (queued) until a worker runs it, then running, then ended. Cancel
requests are stored on the row so whichever process runs the take sees them at its next step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError, LeaseLostError, NotFoundError, TransitionError
from .media import Source
from .models import Owner, Take, utcnow
from .records import UNFINISHED, TakeRecord, TakeStatus
from .rows import TAKE_ROW, TAKES, move, row_record, take_record, take_row
from .takes import finish_take
from .validation import MAX_PAGE, check_id, check_owner, check_page, check_request, check_worker

CANCELLED_BEFORE_START = "Cancelled before it started."


def count_unfinished(session: Session, owner: str) -> int:
    """How many of the owner's takes are pending or running (for the per-owner queue limit)."""
    owner = check_owner(owner)
    return int(session.scalar(select(func.count()).select_from(Take).where(
        Take.owner == owner, Take.status.in_([s.value for s in UNFINISHED]))) or 0)


def list_unfinished(session: Session, limit: int = MAX_PAGE) -> list[TakeRecord]:
    """Every owner's pending and running takes, oldest first (for operators)."""
    limit, _ = check_page(limit, 0)
    rows = session.execute(TAKE_ROW.where(TAKES.c.status.in_([s.value for s in UNFINISHED]))
                           .order_by(TAKES.c.id).limit(limit)).all()
    media, memo = filehooks.media_of(session), {}
    return [row_record(row, media, memo) for row in rows]


def find_take(session: Session, take_id: int) -> TakeRecord | None:
    """Any owner's take by id (operators, signed media links, the runner); None when missing."""
    take_id = check_id(take_id, "take")
    row = session.execute(TAKE_ROW.where(TAKES.c.id == take_id)).first()
    return None if row is None else row_record(row, filehooks.media_of(session), {})


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
        take = take_row(session, owner, take_id)
    if take.status == TakeStatus.PENDING.value:
        move(take, TakeStatus.CANCELLED)
        take.finished_at = utcnow()
        take.error = CANCELLED_BEFORE_START
    elif take.status == TakeStatus.RUNNING.value:
        take.cancel_requested = True
    session.flush()
    return take_record(session, take)


# Workers ---------------------------------------------------------------------------------------

LEASE_S = 30.0  # a worker renews its lease about every third of this while it runs a take
MAX_ATTEMPTS = 2  # a take whose worker died is queued again once, then marked interrupted
LOST_MESSAGE = "The worker running this take stopped twice; generate it again."


def claim_next(session: Session, worker: str, variants: Sequence[str] | None = None,
               lease_s: float = LEASE_S) -> TakeRecord | None:
    """Take the next queued take for `worker` (one of `variants`, if given), or None.

    Fair across owners: the owner whose last take was claimed longest ago (or never; then the
    one waiting longest) goes first, with their oldest take. On PostgreSQL the owner's row and
    then the take's are locked `FOR UPDATE SKIP LOCKED`, so workers claiming at once take
    different owners' takes (and never the same take); on SQLite the write transaction (BEGIN
    IMMEDIATE) already admits one claimer at a time.
    """
    worker = check_worker(worker)
    if variants is not None and not variants:
        return None
    waiting = [Take.owner == Owner.key, Take.status == TakeStatus.PENDING.value]
    if variants is not None:
        waiting.append(Take.variant.in_(list(variants)))
    oldest = select(func.min(Take.id)).where(*waiting).correlate(Owner).scalar_subquery()
    owner_query = (select(Owner).where(exists().where(*waiting))
                   .order_by(Owner.last_served_at.asc().nulls_first(), oldest).limit(1))
    shared = session.get_bind().dialect.name == "postgresql"
    # FOR NO KEY UPDATE: the claim changes no key, so it need not wait for (nor skip past) the
    # KEY SHARE locks that inserting a project or take of this owner holds on its row.
    if shared:
        owner_query = owner_query.with_for_update(skip_locked=True, key_share=True, of=Owner)
    owner = session.scalar(owner_query)
    if owner is None:
        return None
    take_query = (select(Take).where(Take.owner == owner.key,
                                     Take.status == TakeStatus.PENDING.value)
                  .order_by(Take.id).limit(1))
    if variants is not None:
        take_query = take_query.where(Take.variant.in_(list(variants)))
    if shared:
        take_query = take_query.with_for_update(skip_locked=True, key_share=True)
    take = session.scalar(take_query)
    if take is None:
        return None
    now = utcnow()
    move(take, TakeStatus.RUNNING)
    take.worker, take.lease_expires_at = worker, now + timedelta(seconds=lease_s)
    take.started_at, take.step, take.attempts = now, 0, take.attempts + 1
    owner.last_served_at = now
    session.flush()
    return take_record(session, take)


def renew_lease(session: Session, take_id: int, worker: str, lease_s: float = LEASE_S,
                step: int | None = None, total_steps: int | None = None) -> TakeRecord:
    """Extend the worker's lease on its running take (recording progress when given); the
    record says whether a cancel was asked for. LeaseLostError if the take is no longer its."""
    take = _held(session, take_id, worker)
    take.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    if step is not None and total_steps is not None:
        if not 0 <= step <= total_steps or total_steps < 1:
            raise InvalidInputError(f"Progress must satisfy 0 <= step <= total_steps >= 1, got "
                                    f"{step}/{total_steps}.")
        take.step, take.total_steps = step, total_steps
    session.flush()
    return take_record(session, take)


def end_claimed(session: Session, take_id: int, worker: str, status: str, error: str | None = None,
                video: Source | None = None, poster: Source | None = None,
                request: Mapping[str, Any] | None = None,
                latents: Source | None = None) -> TakeRecord:
    """End the worker's take as completed (with its files), failed (with latents a failed decode
    kept) or cancelled, optionally replacing its stored request (the recipe, completed with what
    the run learned)."""
    take = _held(session, take_id, worker)
    if request is not None:
        take.request = check_request(request)
    take.worker, take.lease_expires_at = None, None
    session.flush()
    return finish_take(session, take.owner, take.id, status, error=error, video=video,
                       poster=poster, latents=latents)


def requeue_decode(session: Session, owner: str, take_id: int) -> TakeRecord:
    """Queue a failed take that kept its latents again, for a worker to decode them."""
    take = take_row(session, owner, take_id)
    if take.status != TakeStatus.FAILED.value or not take.latents_path:
        raise TransitionError("Only a failed take that kept its latents can be decoded again.")
    move(take, TakeStatus.PENDING)
    take.error, take.finished_at, take.started_at, take.attempts = None, None, None, 0
    take.cancel_requested = False
    session.flush()
    return take_record(session, take)


def release_expired(session: Session, everyone: bool = False) -> tuple[list[int], list[int]]:
    """Queue again the running takes whose worker's lease ran out (all running takes with
    `everyone`, when no worker can be alive: a lone studio starting up); a take that already
    had its second try is marked interrupted. Returns (queued again, interrupted) ids."""
    query = select(Take).where(Take.status == TakeStatus.RUNNING.value)
    if not everyone:
        query = query.where(Take.lease_expires_at < utcnow())
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    requeued, interrupted = [], []
    media = filehooks.media_of(session)
    for take in session.scalars(query.order_by(Take.id)).all():
        # A file the dead worker wrote but never committed is never needed: only the input stays.
        media.remove_take_files(take.project_id, take.id,
                                keep=tuple(p for p in (take.image_path, take.end_image_path,
                                                          take.latents_path) if p))
        take.worker, take.lease_expires_at, take.cancel_requested = None, None, False
        if take.attempts >= MAX_ATTEMPTS:
            move(take, TakeStatus.INTERRUPTED)
            take.finished_at, take.error = utcnow(), LOST_MESSAGE
            interrupted.append(take.id)
        else:
            move(take, TakeStatus.PENDING)
            take.step, take.started_at = 0, None
            requeued.append(take.id)
    session.flush()
    return requeued, interrupted


def queue_positions(session: Session, owner: str | None = None) -> dict[int, int]:
    """Each queued take's place in line (1 = next), in the order workers will claim them if
    nothing else is queued meanwhile; only `owner`'s takes when given."""
    rows = session.execute(
        select(Take.id, Take.owner, Owner.last_served_at).join(Owner, Owner.key == Take.owner)
        .where(Take.status == TakeStatus.PENDING.value).order_by(Take.id)).all()
    waiting: dict[str, list[int]] = {}
    served: dict[str, Any] = {}
    for take_id, take_owner, last in rows:
        waiting.setdefault(take_owner, []).append(take_id)
        served[take_owner] = last
    # Owners in claim order: never served first, then longest ago; ties by their oldest take.
    turns = sorted(waiting, key=lambda o: (served[o] is not None, served[o] or 0, waiting[o][0]))
    positions: dict[int, int] = {}
    place = 0
    while turns:
        current = turns.pop(0)
        place += 1
        positions[waiting[current].pop(0)] = place
        if waiting[current]:
            turns.append(current)  # served now: to the back of the line
    if owner is not None:
        mine = {r[0] for r in rows if r[1] == owner}
        return {take_id: p for take_id, p in positions.items() if take_id in mine}
    return positions


def _held(session: Session, take_id: int, worker: str) -> Take:
    take = session.get(Take, check_id(take_id, "take"))
    if take is None or take.status != TakeStatus.RUNNING.value or take.worker != worker:
        raise LeaseLostError("This take is no longer this worker's: its lease ran out and it "
                             "was queued again, or it was ended elsewhere.")
    return take
