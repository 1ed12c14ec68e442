"""Longer shots: join a take and its extensions into one clip, with a colour match at each seam.

An extension ("Extend" on a finished take) is an image-to-video take whose start image is its
parent's last frame, so the child's first frame shows what the parent's last frame shows: the
assembled shot keeps the parent's frame and drops the child's copy (the shared frame counts once).

The copy is never exact: the start image went through an MP4 round trip, the VAE and the model,
and image-to-video models tend to settle on their own tone. Left alone, the shot jumps in colour
at every seam, and casts compound along a chain (each part starts from its parent's drifted last
frame). `assemble` estimates a colour transfer between the two frames either side of the seam
as the shot shows it, the running shot's last frame and the child's frame 1 (the first one the
model made itself: frame 0 is the conditioning's copy of the start image, for TI2V-5B literally its
latent decoded, so it says little about the tone the child settles on), and applies it to the
whole child: one map per child, so nothing flickers, and a child that ends in the shot's tone
hands that tone on to the next extension. A fade-out of the correction (`fade_s`) is there too;
benchmarks/bench_extend.py measured the choices (docs/benchmarks.md, "Extending takes: the seam's
colour match").

    frames = assemble([parent_frames, child_frames, grandchild_frames], fps=16)
    assemble_mp4([parent.mp4, child.mp4], out.mp4, [parent_recipe, child_recipe])
    parts = shot_parts(read_settings(out.mp4))   # every part's Recipe, parent first
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from .errors import ShotError
from .recipe import MAX_PARTS, SHOT_FORMAT, SHOT_VERSION, Recipe, is_shot, shot_parts, shot_settings

__all__ = ["MAX_PARTS", "SHOT_FORMAT", "SHOT_VERSION", "ShotError", "apply_transfer", "assemble",
           "assemble_mp4", "colour_transfer", "fade_weights", "fit_frames", "is_shot",
           "pixel_difference", "retime", "seam_difference", "shot_parts", "shot_settings"]

Match = Literal["none", "mean", "mean-std", "affine"]
MATCHES: tuple[str, ...] = ("none", "mean", "mean-std", "affine")
DEFAULT_MATCH: Match = "affine"
DEFAULT_FADE_S = 0.0  # 0: the correction applies to the whole child (see the module docstring)

_MIN_STD = 2.0  # a flat channel (0-255) has no usable spread: its gain stays 1
_GAIN_RANGE = (0.5, 2.0)  # a seam that asks for more than this is not a colour cast
_GRID = 12  # the affine match fits block means of about this many blocks a side
_MIN_CORRELATION = 0.5  # seam frames that correlate less do not show the same picture
_RIDGE = 0.05  # pulls the affine map towards the identity when the seam frames are nearly flat


def seam_difference(parent_last: np.ndarray, child_first: np.ndarray) -> float:
    """Mean absolute difference of the two frames' per-channel means, 0-255 (0: same tone)."""
    a = _channel_means(parent_last)
    b = _channel_means(child_first)
    return float(np.abs(a - b).mean())


def pixel_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference per pixel and channel, 0-255 (tone and detail together)."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def colour_transfer(source: np.ndarray, target: np.ndarray, match: Match = DEFAULT_MATCH) -> np.ndarray:
    """A 4x3 map M with [r, g, b, 1] @ M taking `source`'s colours to `target`'s (0-255 floats).

    mean: per-channel offsets; mean-std: per-channel gain and offset (gains kept within 0.5-2);
    affine: a 3x3 colour matrix plus offsets, least squares over the two frames' block means (so
    a few pixels of motion between them do not matter), with a small ridge towards the identity;
    frames that do not show the same picture, or that ask for more than double the contrast, get
    the offsets alone.
    """
    if match not in MATCHES:
        raise ValueError(f"match must be one of {', '.join(MATCHES)}, got {match!r}.")
    src = np.asarray(source, np.float64).reshape(-1, 3)
    dst = np.asarray(target, np.float64).reshape(-1, 3)
    transfer = np.zeros((4, 3))
    transfer[:3] = np.eye(3)
    if match == "none":
        return transfer
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    if match == "mean":
        transfer[3] = dst_mean - src_mean
        return transfer
    if match == "mean-std":
        src_std, dst_std = src.std(axis=0), dst.std(axis=0)
        gain = np.where(src_std > _MIN_STD, dst_std / np.maximum(src_std, 1e-9), 1.0)
        gain = np.clip(gain, *_GAIN_RANGE)
        transfer[:3] = np.diag(gain)
        transfer[3] = dst_mean - gain * src_mean
        return transfer
    if np.shape(source) != np.shape(target):
        raise ShotError("An affine colour match needs two frames of the same size.")
    # fitted on block means: the frames either side of the seam are a frame apart, and a few
    # pixels of motion would otherwise dilute the gains (a pixel's neighbour is another colour)
    src, dst = _blocks(source), _blocks(target)
    # the two seam frames must show the same picture; if not, only the offsets mean anything
    if not _same_picture(src, dst):
        return colour_transfer(source, target, "mean")
    # centred least squares, ridge towards the identity (scaled to the source's own variance)
    xs, ys = src - src.mean(axis=0), dst - dst.mean(axis=0)
    gram = xs.T @ xs / len(xs)
    ridge = _RIDGE * max(float(np.trace(gram)) / 3, _MIN_STD**2) * np.eye(3)
    linear = np.linalg.solve(gram + ridge, xs.T @ ys / len(xs) + ridge @ np.eye(3))
    # a seam asking for more than double the contrast is not a cast either
    if not np.all(np.isfinite(linear)) or np.linalg.svd(linear, compute_uv=False).max() > _GAIN_RANGE[1]:
        return colour_transfer(source, target, "mean")
    transfer[:3] = linear
    transfer[3] = dst_mean - src_mean @ linear
    return transfer


def apply_transfer(frames: np.ndarray, transfer: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """uint8 frames (T, H, W, 3) through the colour map; `weights` (T,) blend each frame with it."""
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):  # one frame at a time keeps the float copies small
        pixels = frame.reshape(-1, 3).astype(np.float32)
        mapped = pixels @ transfer[:3].astype(np.float32) + transfer[3].astype(np.float32)
        weight = 1.0 if weights is None else float(weights[index])
        if weight < 1.0:
            mapped = pixels + weight * (mapped - pixels)
        out[index] = np.clip(mapped + 0.5, 0, 255).astype(np.uint8).reshape(frame.shape)
    return out


def fade_weights(count: int, fade_frames: int) -> np.ndarray:
    """How much of the correction each child frame gets: all of it (fade_frames 0), or all at
    the seam falling linearly to none after `fade_frames` frames."""
    if fade_frames <= 0:
        return np.ones(count)
    return np.clip(1.0 - np.arange(count) / fade_frames, 0.0, 1.0)


def assemble(parts: Sequence[np.ndarray], fps: int, *, match: Match = DEFAULT_MATCH,
             fade_s: float = DEFAULT_FADE_S, seam_frame: int = 1) -> np.ndarray:
    """One shot from a take and its extensions: uint8 (T, H, W, 3) parts, parent first.

    Each child's first frame is its parent's last frame again, so it is dropped; each child is
    fitted to the shot's size (scaled and centre-cropped) and colour-matched to the running shot
    (`match`, estimated on the child's frame `seam_frame`, faded out over `fade_s` seconds or
    applied whole when 0).
    """
    if not parts:
        raise ShotError("A shot needs at least one part.")
    for index, part in enumerate(parts):
        if not isinstance(part, np.ndarray) or part.ndim != 4 or part.shape[-1] != 3 \
                or part.dtype != np.uint8 or len(part) == 0:
            got = getattr(part, "shape", type(part).__name__)
            raise ShotError(f"Part {index + 1} of the shot is not uint8 frames (T, H, W, 3): {got}.")
    if len(parts) > 1 and any(len(part) < 2 for part in parts[1:]):
        raise ShotError("An extension needs at least two frames: its first one is the shared frame.")
    height, width = parts[0].shape[1:3]
    fade_frames = int(round(max(0.0, fade_s) * fps))
    pieces = [parts[0]]
    running_last = parts[0][-1]
    for child in parts[1:]:
        child = fit_frames(child, width, height)
        # estimated on the frames either side of the seam as the shot shows it: the child's frame
        # 0 is dropped, and it is the conditioning's copy of the start image anyway (TI2V-5B puts
        # the image's latent there as it is), so the tone the model settles on starts at frame 1
        transfer = colour_transfer(child[min(seam_frame, len(child) - 1)], running_last, match)
        matched = apply_transfer(child, transfer, fade_weights(len(child), fade_frames))
        pieces.append(matched[1:])
        running_last = matched[-1]
    return np.concatenate(pieces)


def fit_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Frames scaled to cover (width, height) and centre-cropped to it (a no-op at that size)."""
    if frames.shape[1:3] == (height, width):
        return frames
    from PIL import ImageOps

    return np.stack([np.asarray(ImageOps.fit(Image.fromarray(frame), (width, height),
                                             method=Image.Resampling.LANCZOS))
                     for frame in frames])


def retime(frames: np.ndarray, from_fps: int, to_fps: int) -> np.ndarray:
    """Frames shown at `from_fps` resampled to `to_fps` (nearest frame), keeping the duration."""
    if from_fps == to_fps:
        return frames
    duration = (len(frames) - 1) / from_fps
    count = int(round(duration * to_fps)) + 1
    picks = np.minimum(np.round(np.arange(count) * from_fps / to_fps).astype(int), len(frames) - 1)
    return frames[picks]


def assemble_mp4(part_paths: Sequence[str | Path], out_path: str | Path,
                 recipes: Sequence[Recipe | Mapping[str, Any]], *, match: Match = DEFAULT_MATCH,
                 fade_s: float = DEFAULT_FADE_S) -> Path:
    """Join the parts' MP4s (parent first) into one MP4 embedding every part's recipe.

    One recipe per video: a Recipe, its dict, or, for a video that is itself an assembled shot
    (extending a shot again), that shot's settings. The shot plays at the first part's frame
    rate; a part made at another rate is retimed to it, so it keeps its duration.
    """
    from .video import read_frames, write_mp4

    if len(part_paths) != len(recipes):
        raise ShotError(f"A shot needs one recipe per video: {len(part_paths)} videos, "
                        f"{len(recipes)} recipes.")
    if not part_paths:
        raise ShotError("A shot needs at least one part.")
    settings = shot_settings(recipes)  # checks every recipe and the number of parts first
    rates = [(recipe if isinstance(recipe, Recipe) else shot_parts(recipe)[0]).request.fps
             for recipe in recipes]
    fps = rates[0]
    parts = [retime(read_frames(Path(path)), rate, fps) for path, rate in zip(part_paths, rates)]
    return write_mp4(assemble(parts, fps, match=match, fade_s=fade_s), Path(out_path), fps, settings)


def _blocks(frame: np.ndarray) -> np.ndarray:
    """A frame's mean colours over a grid of about _GRID x _GRID blocks, as (N, 3) floats."""
    frame = np.asarray(frame, np.float64)
    height, width = frame.shape[:2]
    block_h, block_w = max(1, height // _GRID), max(1, width // _GRID)
    rows, cols = height // block_h, width // block_w
    cropped = frame[: rows * block_h, : cols * block_w]
    return cropped.reshape(rows, block_h, cols, block_w, 3).mean(axis=(1, 3)).reshape(-1, 3)


def _same_picture(src: np.ndarray, dst: np.ndarray) -> bool:
    """Whether two aligned frames' pixels (N, 3) correlate: at least 0.5 on average over the
    channels that vary in both (flat channels say nothing either way; all flat is not a picture)."""
    correlations = []
    for channel in range(3):
        a, b = src[:, channel], dst[:, channel]
        if a.std() > _MIN_STD and b.std() > _MIN_STD:
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
    return bool(correlations) and float(np.mean(correlations)) >= _MIN_CORRELATION


def _channel_means(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ShotError(f"A frame must be (height, width, 3), got {frame.shape}.")
    return frame.reshape(-1, 3).astype(np.float64).mean(axis=0)
