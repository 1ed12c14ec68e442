"""Measurements of the properties the cinematic controls should change, on uint8 or float clips."""

from __future__ import annotations

import numpy as np

from .world import COLORS, GROUND, SKY, TREE, TRUNK

BACKGROUND = [*(c for pair in SKY.values() for c in pair), *GROUND.values(), *TREE.values(), TRUNK]


def background_colors(time: str, scene: str) -> list[tuple[float, float, float]]:
    """The sky, ground and tree colours of one time of day and scene. A subject detector that also
    knows the other times' skies takes a blue or purple subject a shade off its hue for a night or
    dusk sky that a daytime clip cannot show."""
    return [*SKY[time], GROUND[scene], TREE[scene], TRUNK]


def _float(clip: np.ndarray) -> np.ndarray:
    clip = np.asarray(clip)
    return clip.astype(np.float32) / 255.0 if clip.dtype == np.uint8 else clip.astype(np.float32)


def red_minus_blue(clip: np.ndarray) -> float:
    """Mean red minus mean blue over the whole clip."""
    c = _float(clip)
    return float((c[..., 0] - c[..., 2]).mean())


def brightness(clip: np.ndarray) -> float:
    """Mean luma over the whole clip."""
    c = _float(clip)
    return float((0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]).mean())


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dy, dx) that moves frame a onto frame b, by phase correlation with a Hann window."""
    h, w = a.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    r = fb * np.conj(fa)
    r /= np.abs(r) + 1e-9
    corr = np.fft.ifft2(r).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy = dy - h if dy > h // 2 else dy
    dx = dx - w if dx > w // 2 else dx
    return float(dy), float(dx)


def motion(clip: np.ndarray, gap: int = 4) -> tuple[float, float]:
    """Mean content motion (dy, dx) in pixels per frame, from frames `gap` apart."""
    c = _float(clip)
    gray = c.mean(axis=-1)
    pairs = [_shift(gray[i], gray[i + gap]) for i in range(0, len(gray) - gap, gap)]
    if not pairs:
        raise ValueError(f"A clip of {len(gray)} frames is too short to measure motion over {gap} frames.")
    dy, dx = np.mean(pairs, axis=0)
    return float(dy) / gap, float(dx) / gap


def color_masks(clip: np.ndarray, max_distance: float = 0.27,
                background: list[tuple[float, float, float]] | None = None) -> dict[str, np.ndarray]:
    """Per named subject colour, the pixels nearest to it (not to a sky or ground colour: by default
    any the world has, or the clip's own from `background_colors`)."""
    c = _float(clip)
    norm = c / (c.max(axis=-1, keepdims=True) + 1e-6)  # undo time-of-day dimming
    sat = c.max(axis=-1) - c.min(axis=-1)
    refs = np.array([np.array(rgb) / max(rgb) for rgb in [*COLORS.values(), *(background or BACKGROUND)]],
                    np.float32)
    dist = np.abs(norm[..., None, :] - refs).max(axis=-1)  # (..., colours)
    nearest = dist.argmin(axis=-1)
    ok = (dist.min(axis=-1) < max_distance) & (sat > 0.06)
    return {name: ok & (nearest == i) for i, name in enumerate(COLORS)}


def dominant_color(clip: np.ndarray, exclude: tuple[str, ...] = (),
                   background: list[tuple[float, float, float]] | None = None) -> str:
    """The subject colour covering the most pixels (colours in `exclude`, e.g. the ground, skipped)."""
    counts = {k: int(m.sum()) for k, m in color_masks(clip, background=background).items() if k not in exclude}
    return max(counts, key=counts.get)


def subject_area(mask: np.ndarray) -> np.ndarray:
    """Fraction of each frame covered by a boolean subject mask, per frame."""
    return mask.reshape(len(mask), -1).mean(axis=1)


def centroid_x(mask: np.ndarray) -> float:
    """Mean horizontal position (0 left .. 1 right) of a boolean mask over all frames."""
    t, h, w = mask.shape
    xs = np.nonzero(mask)[2]
    return float((xs.mean() + 0.5) / w) if len(xs) else 0.5


def latent_dx(latent: np.ndarray, first: int = 1, last: int = 3, max_shift: float = 2.0) -> float:
    """Horizontal content shift (latent pixels, + is rightwards) from latent frame `first` to `last` of
    one (C, F, H, W) latent: the shift, on a 0.05 grid, that best maps the one onto the other with linear
    interpolation. Reads motion where a decoded clip's blur hides it from phase correlation."""
    z = np.asarray(latent, np.float32)
    a, b = z[:, first], z[:, last]
    w = a.shape[-1]
    margin = int(np.ceil(max_shift))
    if w <= 2 * margin:
        raise ValueError(f"A latent {w} wide is too narrow to measure shifts up to {max_shift}.")
    cols = np.arange(margin, w - margin)
    errors = []
    shifts = np.arange(-max_shift, max_shift + 1e-6, 0.05)
    for s in shifts:
        src = cols - s
        lo = np.floor(src).astype(int)
        frac = src - lo
        moved = a[..., lo] * (1 - frac) + a[..., np.minimum(lo + 1, w - 1)] * frac
        errors.append(float(((moved - b[..., cols]) ** 2).mean()))
    return float(shifts[int(np.argmin(errors))])
