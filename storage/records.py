"""Frozen records that repositories return: plain values, safe to keep after the session ends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Any, Literal


class TakeStatus(str, Enum):
    """Where a take is in its life (compares equal to its plain string value)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


ParentKind = Literal["remix", "continue", "extend"]
PARENT_KINDS: tuple[str, ...] = ("remix", "continue", "extend")

# Which status each status may move to; the terminal ones move nowhere.
TRANSITIONS: dict[TakeStatus, frozenset[TakeStatus]] = {
    TakeStatus.PENDING: frozenset({TakeStatus.RUNNING, TakeStatus.FAILED, TakeStatus.CANCELLED,
                                   TakeStatus.INTERRUPTED}),
    # running -> pending: its worker died and the take is queued again (storage.queue)
    TakeStatus.RUNNING: frozenset({TakeStatus.COMPLETED, TakeStatus.FAILED, TakeStatus.CANCELLED,
                                   TakeStatus.INTERRUPTED, TakeStatus.PENDING}),
    TakeStatus.COMPLETED: frozenset(),
    # failed -> pending: queued again to decode latents it kept (storage.queue.requeue_decode)
    TakeStatus.FAILED: frozenset({TakeStatus.PENDING}),
    TakeStatus.CANCELLED: frozenset(),
    TakeStatus.INTERRUPTED: frozenset(),
}
UNFINISHED: tuple[TakeStatus, ...] = (TakeStatus.PENDING, TakeStatus.RUNNING)
FINISHED: tuple[TakeStatus, ...] = tuple(s for s in TakeStatus if s not in UNFINISHED)


@dataclass(frozen=True)
class ProjectRecord:
    """A project of one owner, with how many takes it holds."""

    id: int
    owner: str
    name: str
    created_at: datetime
    updated_at: datetime
    take_count: int


@dataclass(frozen=True)
class TakeRecord:
    """One generation and its outcome; media paths are relative to the media folder."""

    id: int
    project_id: int
    owner: str
    request_json: str = field(repr=False)  # the stored request; `.request` decodes it
    variant: str
    seed: int | None
    prompt: str
    status: TakeStatus
    error: str | None
    step: int
    total_steps: int | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    video_path: str | None
    poster_path: str | None
    image_path: str | None
    parent_id: int | None
    parent_kind: ParentKind | None
    favourite: bool
    media_missing: bool  # a file this row names is not on disk
    cancel_requested: bool = False  # someone asked it to stop; the run stops at its next step
    worker: str | None = None  # the worker running it, while it runs
    attempts: int = 0  # how many times a worker has taken it
    latents_path: str | None = None  # a failed decode's latents, kept to decode again
    batch_id: int | None = None  # variations queued together share their first take's id
    end_image_path: str | None = None  # the frame a first-last-frame take ends on
    shot_path: str | None = None  # an extension's assembled shot (parent chain + itself)

    @property
    def decodable(self) -> bool:
        """A failed take whose denoised latents were kept: "decode again" can finish it."""
        return self.status == TakeStatus.FAILED and bool(self.latents_path) and not self.media_missing

    @cached_property
    def request(self) -> dict[str, Any]:
        """The full request as a dict (decoded once per record): GenerationRequest.from_dict(...)."""
        return json.loads(self.request_json)

    @property
    def finished(self) -> bool:
        """True once the take has ended (completed, failed, cancelled or interrupted); only a
        failed take that kept its latents may be queued again, to decode them."""
        return self.status in FINISHED


@dataclass(frozen=True)
class ShareLinkRecord:
    """A share token for one take; `revoked_at` is set once it stops working."""

    token: str
    take_id: int
    created_at: datetime
    revoked_at: datetime | None
    include_image: bool = False  # the share page shows the take's start image

    @property
    def active(self) -> bool:
        """True while the link still opens its take."""
        return self.revoked_at is None
