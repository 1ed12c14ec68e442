"""Batches of world clips as tensors in [-1, 1], laid out (batch, channels, frames, height, width)."""

from __future__ import annotations

import numpy as np
import torch

from .world import ClipSpec, render, sample_spec

HELD_OUT_OFFSET = 1_000_003  # seeds at or above this are never used for training


def to_tensor(clip: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) floats in [0, 1] -> (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(clip).permute(3, 0, 1, 2).mul(2).sub(1)


def spec_for(index: int) -> ClipSpec:
    """The clip spec with this index (held-out clips use indices from HELD_OUT_OFFSET)."""
    return sample_spec(np.random.default_rng(index))


def clip_batch(indices: list[int], frames: int, size: int = 64) -> torch.Tensor:
    """Render the clips with these indices."""
    return torch.stack([to_tensor(render(spec_for(i), frames, size, size)) for i in indices])


def frame_batch(indices: list[int], rng: np.random.Generator, size: int = 64) -> torch.Tensor:
    """One random frame from each clip, as single-frame videos."""
    out = []
    for i in indices:
        k = int(rng.integers(0, 17))
        out.append(to_tensor(render(spec_for(i), 1, size, size, first=k)))
    return torch.stack(out)
