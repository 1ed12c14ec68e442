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


class MediaPathError(StorageError):
    """A stored media path would resolve outside the media folder."""
