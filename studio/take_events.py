"""What a take's watchers see: the engine's own events plus a few take-level ones.

A watcher (the browser's generate stream, an API client) receives, in order: `TakeQueued`, then
`TakeStarted` when a worker claims it, the engine's `StepEvent`s, `PreviewImage`s (a preview the
worker rendered once, as a small animated WebP) and its `DecodingEvent`, and always one
`TakeFinished` carrying the stored take. The UI and the API each render them with one `match`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import storage
from pipelines.events import DecodingEvent, Expert, StepEvent


@dataclass(frozen=True)
class TakeQueued:
    """The take is stored and waits for a worker; `position` 1 is next (None: not known)."""

    take_id: int
    position: int | None = None


@dataclass(frozen=True)
class TakeStarted:
    """A worker claimed the take and loads the model or starts denoising."""

    take_id: int
    total: int


@dataclass(frozen=True)
class PreviewImage:
    """A preview after a step, rendered once by the worker as an animated WebP."""

    index: int
    total: int
    expert: Expert
    webp: bytes = field(repr=False)


@dataclass(frozen=True)
class TakeFinished:
    """The take ended; `take` is its stored record (status completed, failed or cancelled)."""

    take: storage.TakeRecord
    message: str = ""
    elapsed_s: float | None = None

    @property
    def take_id(self) -> int:
        """The take's id."""
        return self.take.id


TakeEvent = Union[TakeQueued, TakeStarted, StepEvent, PreviewImage, DecodingEvent, TakeFinished]
