"""Share links: unguessable tokens that open one completed take read-only until revoked.

Only `resolve_share` / `resolve_share_link` cross owners: they are what a visitor's token opens.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError, NotFoundError, TransitionError
from .models import ShareLink, Take, utcnow
from .records import ShareLinkRecord, TakeRecord, TakeStatus
from .rows import TAKE_ROW, TAKES, row_record, share_record, take_row
from .validation import check_owner, is_token_shaped


def create_share_link(session: Session, owner: str, take_id: int,
                      include_image: bool = False) -> ShareLinkRecord:
    """The completed take's active share link, made now (token_urlsafe(32)) if it has none.

    `include_image`: whether the page shows the take's start image (the live link takes the latest
    choice).
    """
    if not isinstance(include_image, bool):
        raise InvalidInputError("include_image must be True or False.")
    take = take_row(session, owner, take_id)
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
    return share_record(link)


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
    return share_record(link)


def list_share_links(session: Session, owner: str, take_id: int) -> list[ShareLinkRecord]:
    """Every share link of the owner's take, newest first, revoked ones included."""
    take = take_row(session, owner, take_id)
    links = session.scalars(
        select(ShareLink).where(ShareLink.take_id == take.id)
        .order_by(ShareLink.created_at.desc(), ShareLink.token)).all()
    return [share_record(link) for link in links]


def resolve_share_link(session: Session, token: str) -> TakeRecord | None:
    """The take a live share token opens, for anyone; None when unknown, malformed or revoked."""
    shared = resolve_share(session, token)
    return None if shared is None else shared[0]


def resolve_share(session: Session, token: str) -> tuple[TakeRecord, ShareLinkRecord] | None:
    """The take a live share token opens and the link itself (what the page may show)."""
    if not is_token_shaped(token):
        return None
    row = session.execute(
        TAKE_ROW.add_columns(ShareLink.created_at.label("link_created_at"),
                              ShareLink.include_image.label("link_include_image"))
        .join(ShareLink, ShareLink.take_id == TAKES.c.id)
        .where(ShareLink.token == token, ShareLink.revoked_at.is_(None))).first()
    if row is None:
        return None
    take = row_record(row, filehooks.media_of(session), {})
    link = ShareLinkRecord(token=token, take_id=take.id, created_at=row.link_created_at,
                           revoked_at=None, include_image=bool(row.link_include_image))
    return take, link
