"""Errors the engine raises with messages a user can act on."""

from __future__ import annotations


class StudioError(Exception):
    """Base class: the message is one sentence meant for the person using the studio."""


class RequestError(StudioError, ValueError):
    """A generation request is invalid; `field` names the control at fault (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class WeightsError(StudioError):
    """Weights could not be found, read, or do not hold the expected variant."""


class GenerationCancelled(StudioError):
    """A run was cancelled before it finished."""


class ProfileError(StudioError):
    """A memory profile is unknown or does not fit this machine's GPU memory or host RAM."""


class ShotError(StudioError, ValueError):
    """Parts that cannot be joined into one shot, or settings that are not a readable shot."""
