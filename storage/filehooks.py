"""Ties media files to session transactions: new files go on rollback, doomed ones after commit."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from .errors import StorageError
from .media import MediaKind, MediaStore, Source

log = logging.getLogger(__name__)

_MEDIA = "storage.media"
_STAGED = "storage.staged"  # files written in this transaction: removed unless it commits
_DOOMED = "storage.doomed"  # files of deleted rows: removed only once the delete commits


def install(factory: sessionmaker[Session], media: MediaStore) -> None:
    """Give every session from `factory` the media store and the commit/rollback file hooks."""
    factory.configure(info={_MEDIA: media})
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_transaction_end", _after_transaction_end)


def media_of(session: Session) -> MediaStore:
    """The media store of a session made by `Database.session()`."""
    media = session.info.get(_MEDIA)
    if media is None:
        raise StorageError("This session was not made by Database.session(); storage needs its media store.")
    return media


def stage(session: Session, project_id: int, take_id: int, kind: MediaKind, source: Source) -> str:
    """Write a take's file now; it is removed again if the session's transaction does not commit."""
    relative = media_of(session).write(project_id, take_id, kind, source)
    session.info.setdefault(_STAGED, []).append(relative)
    return relative


def remove_after_commit(session: Session, relative: str) -> None:
    """Remove a stored file or folder once (and only if) the session's transaction commits."""
    session.info.setdefault(_DOOMED, []).append(relative)


def _after_commit(session: Session) -> None:
    media: MediaStore = session.info[_MEDIA]
    for relative in session.info.pop(_DOOMED, []):
        try:
            media.remove(relative)
        except OSError as exc:  # the rows are gone already; a left-over file is only wasted space
            log.warning("Could not remove %s after commit: %s", relative, exc)
    session.info.pop(_STAGED, None)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    media: MediaStore | None = session.info.get(_MEDIA)
    staged: list[Any] = session.info.pop(_STAGED, [])
    session.info.pop(_DOOMED, None)
    if media is None:
        return
    for relative in reversed(staged):
        try:
            media.remove(relative)
        except OSError as exc:
            log.warning("Could not remove %s after rollback: %s", relative, exc)
