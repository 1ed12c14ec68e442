"""The control pairs the demo benchmark generates, and what each measures: both sides share a seed
and the rest of the prompt, and a pair is right when the property moves the way the control says."""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from .data import spec_for
from .measure import (background_colors, brightness, centroid_x, color_masks, motion, red_minus_blue,
                      subject_area)
from .world import ClipSpec, render

BENCH_OFFSET = 2_000_003  # clip specs for benchmarks, never trained on


def subject(clip: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Pixels of the spec's subject colour, told apart from the clip's own sky, ground and trees."""
    return color_masks(clip, background=background_colors(spec.time, spec.scene))[spec.color]


def growth(clip: np.ndarray, spec: ClipSpec) -> float:
    """Subject area in the last four frames over the first four."""
    area = subject_area(subject(clip, spec))
    return float((area[-4:].mean() + 1e-4) / (area[:4].mean() + 1e-4))


def drift(clip: np.ndarray, spec: ClipSpec) -> float:
    """Subject centroid's horizontal move from the first four frames to the last four."""
    mask = subject(clip, spec)
    return centroid_x(mask[-4:]) - centroid_x(mask[:4])


class Pair(NamedTuple):
    """A control pair: side A should measure higher than side B."""

    name: str
    field: str
    side_a: str
    side_b: str
    measure: Callable[[np.ndarray, ClipSpec], float]
    subject: bool = False  # measured on the subject, found by its colour


# The subject is found by its colour, which soft or dim light and a tinted tone wash out (on the
# world's own clips the detector then misses it in up to 6 of 32 pairs); pairs measured on the
# subject keep these fixed and vary everything else, so the world itself gets every pair right.
SUBJECT_VISIBLE = {"time": "daytime", "tone": "neutral", "light": "top light"}

PAIRS = [
    Pair("warm vs cool tone (red-blue)", "tone", "warm colors", "cool colors", lambda c, s: red_minus_blue(c)),
    Pair("pan left vs right (content dx)", "camera", "pan left", "pan right", lambda c, s: motion(c)[1]),
    Pair("push in vs pull back (area growth)", "camera", "push in", "pull back", growth, subject=True),
    Pair("right- vs left-heavy (centroid x)", "composition", "right-heavy composition",
         "left-heavy composition", lambda c, s: centroid_x(subject(c, s)), subject=True),
    Pair("close-up vs wide (subject area)", "shot", "close-up", "wide shot",
         lambda c, s: float(subject(c, s).mean()), subject=True),
    Pair("day vs night (brightness)", "time", "daytime", "night", lambda c, s: brightness(c)),
]
IMAGE_PAIRS = [PAIRS[1], Pair("moves right vs left (subject dx)", "motion", "right", "left", drift, subject=True)]


def pair_specs(pair: Pair, seeds: int) -> list[tuple[ClipSpec, ClipSpec, ClipSpec]]:
    """Per seed (base, side A, side B): a benchmark spec and it with the control set each way;
    image-to-video pairs start both sides from the base's first frame."""
    out = []
    for s in range(seeds):
        base = spec_for(BENCH_OFFSET + s)
        if pair.subject:
            base = dataclasses.replace(base, **SUBJECT_VISIBLE)
        out.append((base, dataclasses.replace(base, **{pair.field: pair.side_a}),
                    dataclasses.replace(base, **{pair.field: pair.side_b})))
    return out


class Outcome(NamedTuple):
    """How a pair came out over its seeds: pairs right, and the median of side A minus side B
    (the size of the effect, in the measure's own units; the median, as a ratio such as area
    growth explodes when a side barely shows the subject)."""

    right: int
    seeds: int
    effect: float


def outcome(pair: Pair, clips: list[tuple[np.ndarray, np.ndarray]],
            specs: list[tuple[ClipSpec, ClipSpec, ClipSpec]]) -> Outcome:
    """Score (side A, side B) clips made from `pair_specs` with the pair's measure."""
    diffs = [pair.measure(a, sa) - pair.measure(b, sb) for (a, b), (_, sa, sb) in zip(clips, specs)]
    return Outcome(int(sum(d > 0 for d in diffs)), len(diffs), float(np.median(diffs)))


def world_outcome(pair: Pair, seeds: int, size: int = 64, frames: int = 17) -> Outcome:
    """The pair measured on the world's own clips: the ceiling of the measurement, and the size of
    the effect a model that learned the control would show."""
    clip = lambda spec: (render(spec, frames, size, size) * 255).round().astype(np.uint8)  # noqa: E731
    specs = pair_specs(pair, seeds)
    return outcome(pair, [(clip(a), clip(b)) for _, a, b in specs], specs)
