"""Errors storage raises; each message is one sentence a user can act on."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for everything storage refuses or cannot do."""


class NotFoundError(StorageError, LookupError):
    """The project, take or share link does not exist for this owner (or at all)."""


class InvalidInputError(StorageError, ValueError):
    """A name, owner key, page, status or file given to storage is not acceptable."""


class TransitionError(StorageError):
    """A take cannot move from its current status to the one asked for."""


class LeaseLostError(StorageError):
    """A worker acted on a take that is no longer its own (its lease ran out, or it ended)."""


class MediaPathError(StorageError):
    """A stored media path would resolve outside the media folder."""


class DatabaseError(StorageError):
    """The database itself failed (disk full, read-only, I/O error, gone); the message says which,
    never the SQL or its parameters, which stay in the server log."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def database_error(exc: BaseException) -> DatabaseError:
    """The user-facing DatabaseError for a driver or SQLAlchemy error."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "full" in text or "no space" in text:
        return DatabaseError("The studio's disk is full, so the change was not saved; free some "
                             "space in the data folder and try again.", disk_full=True)
    if "readonly" in text or "read-only" in text or "read only" in text:
        return DatabaseError("The studio's database is read-only, so the change was not saved; "
                             "the operator must make the data folder writable.")
    if "locked" in text or "busy" in text:
        return DatabaseError("The studio's database is busy; try again in a moment.")
    return DatabaseError("The studio's database could not be used just now; try again in a "
                         "moment, and tell the operator if it keeps happening.")
