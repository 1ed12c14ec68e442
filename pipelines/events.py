"""Typed events the engine reports while it runs, and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Literal, Union

import numpy as np

from .request import GenerationRequest

Expert = Literal["high-noise", "low-noise", "single"]

EXPERT_ROLES: dict[str, str] = {
    "high-noise": "layout and motion",
    "low-noise": "detail",
    "single": "denoising",
}


@dataclass(frozen=True)
class StepEvent:
    """A denoising step has finished (`index` counts from 1)."""

    index: int
    total: int
    expert: Expert
    timestep: float
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class PreviewEvent:
    """A preview is ready after a step; `frames` renders it on first access and keeps it.

    Rendering is deferred so a consumer that shows at most a few previews a second pays only for
    the ones it shows. `frames` is uint8 (frames, height, width, 3) with a small longest side.
    """

    index: int
    total: int
    expert: Expert
    render: Callable[[], np.ndarray] = field(repr=False, compare=False)
    decoded: bool = False  # True when made with the real VAE, not the linear projection

    @cached_property
    def frames(self) -> np.ndarray:
        """The preview frames, rendered once."""
        return self.render()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as rendered frames (e.g. across ZeroGPU's process boundary)."""
        return (_rendered_preview, (self.index, self.total, self.expert, self.frames, self.decoded))


def _rendered_preview(index: int, total: int, expert: Expert, frames: np.ndarray,
                      decoded: bool) -> PreviewEvent:
    return PreviewEvent(index, total, expert, lambda: frames, decoded)


@dataclass(frozen=True)
class DecodingEvent:
    """Denoising is over; the VAE is decoding the final latents."""

    total: int


@dataclass(frozen=True)
class LoraRecord:
    """A LoRA as it was used in a take: its name, content hash and strength on each expert."""

    name: str  # the file name (no folder), or the Hub id and file
    sha256: str  # of the file's bytes: the same name can hold other weights later
    high: float  # strength on the high-noise expert (the only expert of TI2V-5B)
    low: float  # strength on the low-noise expert (0 when not applied)


@dataclass(frozen=True)
class GenerationResult:
    """Frames of a finished run plus everything needed to store it."""

    request: GenerationRequest
    frames: np.ndarray = field(repr=False)  # uint8 (frames, height, width, 3)
    weights_source: str
    notices: tuple[str, ...]
    elapsed_s: float
    profile: str = ""  # the memory profile the run used (pipelines.profiles)
    loras: tuple[LoraRecord, ...] = ()  # every LoRA applied, the preset's included
    preset: str | None = None


@dataclass(frozen=True)
class DoneEvent:
    """The run finished and produced `result`."""

    result: GenerationResult


@dataclass(frozen=True)
class FailedEvent:
    """The run failed; `message` is meant for the user.

    When denoising finished but decoding failed, `latents` holds the final latents (a CPU tensor)
    so that `Engine.decode_again` can finish the take without denoising again.
    """

    message: str
    latents: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CancelledEvent:
    """The run was cancelled after `steps_done` steps; nothing was decoded."""

    steps_done: int


Event = Union[StepEvent, PreviewEvent, DecodingEvent, DoneEvent, FailedEvent, CancelledEvent]
EventSink = Callable[[Event], None]
