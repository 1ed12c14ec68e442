"""A procedural world of short captioned clips: one subject on sky and ground, lit and filmed
the way the studio's cinematic controls describe.

Everything is a pure function of a seed. Camera moves follow physics: a camera panning left
makes the content move right, tilting up moves it down, pushing in magnifies it over time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.15, 0.75, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.60, 0.15, 0.80),
}
SHAPES = ("ball", "cube", "pyramid")
SCENES = ("meadow", "desert")
MOTIONS = ("still", "left", "right")
TIMES = ("daytime", "dusk", "night")
TONES = ("neutral", "warm colors", "cool colors")
LIGHTS = ("soft light", "hard light", "side light", "top light")
SHOTS = ("close-up", "medium shot", "wide shot")
COMPOSITIONS = ("center composition", "left-heavy composition", "right-heavy composition")
CAMERAS = ("static (fixed) camera", "pan left", "pan right", "tilt up", "tilt down", "push in",
           "pull back")
# the moves the benchmarks measure (pans, push/pull) are drawn more often than tilts
CAMERA_WEIGHTS = (0.16, 0.20, 0.20, 0.08, 0.08, 0.14, 0.14)

SHOT_RADIUS = {"close-up": 0.27, "medium shot": 0.16, "wide shot": 0.085}  # fraction of height
COMPOSITION_X = {"center composition": 0.5, "left-heavy composition": 0.3,
                 "right-heavy composition": 0.7}
TONE_GAIN = {"neutral": (1.0, 1.0, 1.0), "warm colors": (1.18, 1.0, 0.72),
             "cool colors": (0.72, 1.0, 1.18)}
TIME_LIGHT = {"daytime": 1.0, "dusk": 0.72, "night": 0.38}
SKY = {  # top colour, horizon colour
    "daytime": ((0.35, 0.60, 0.95), (0.75, 0.88, 1.0)),
    "dusk": ((0.35, 0.25, 0.55), (0.98, 0.55, 0.35)),
    "night": ((0.02, 0.03, 0.12), (0.10, 0.12, 0.30)),
}
GROUND = {"meadow": (0.30, 0.42, 0.18), "desert": (0.80, 0.68, 0.45)}
TREE = {"meadow": (0.10, 0.28, 0.10), "desert": (0.35, 0.30, 0.18)}  # canopy colour
TRUNK = (0.30, 0.18, 0.08)
HORIZON = 0.45  # fraction of height, at the start of a clip
PAN_SPEED = 0.021  # fraction of width per frame
TILT_SPEED = 0.016  # fraction of height per frame
ZOOM_RATE = 0.024  # log-scale per frame
SUBJECT_SPEED = 0.012  # fraction of width per frame, in the world


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows; every field maps to a caption phrase."""

    color: str
    shape: str
    scene: str
    motion: str
    time: str
    tone: str
    light: str
    shot: str
    composition: str
    camera: str
    seed: int  # layout of trees and clouds, small jitters

    def __post_init__(self) -> None:
        for name, options in (("color", tuple(COLORS)), ("shape", SHAPES), ("scene", SCENES),
                              ("motion", MOTIONS), ("time", TIMES), ("tone", TONES),
                              ("light", LIGHTS), ("shot", SHOTS), ("composition", COMPOSITIONS),
                              ("camera", CAMERAS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}; got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict."""
        return asdict(self)


def sample_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw a clip spec uniformly over the vocabulary (camera: by CAMERA_WEIGHTS)."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    camera = CAMERAS[int(rng.choice(len(CAMERAS), p=CAMERA_WEIGHTS))]
    return ClipSpec(
        color=pick(tuple(COLORS)), shape=pick(SHAPES), scene=pick(SCENES), motion=pick(MOTIONS),
        time=pick(TIMES), tone=pick(TONES), light=pick(LIGHTS), shot=pick(SHOTS),
        composition=pick(COMPOSITIONS), camera=camera, seed=int(rng.integers(2**31)),
    )


def _camera(spec: ClipSpec, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame content shift (dx, dy in fractions of the frame) and zoom factor."""
    zeros, ones = np.zeros_like(t), np.ones_like(t)
    if spec.camera == "pan left":
        return PAN_SPEED * t, zeros, ones
    if spec.camera == "pan right":
        return -PAN_SPEED * t, zeros, ones
    if spec.camera == "tilt up":
        return zeros, TILT_SPEED * t, ones
    if spec.camera == "tilt down":
        return zeros, -TILT_SPEED * t, ones
    if spec.camera == "push in":
        return zeros, zeros, np.exp(ZOOM_RATE * t)
    if spec.camera == "pull back":
        return zeros, zeros, np.exp(-ZOOM_RATE * t)
    return zeros, zeros, ones


def _cover(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (negative inside), in frame units."""
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def render(spec: ClipSpec, frames: int = 17, height: int = 64, width: int = 64,
           first: int = 0) -> np.ndarray:
    """Render frames first .. first + frames - 1 of a clip as float32 RGB in [0, 1],
    shape (frames, height, width, 3)."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"A clip needs at least 1 frame and 8x8 pixels; got {frames} frames of "
                         f"{width}x{height}.")
    rng = np.random.default_rng(spec.seed)
    aspect = width / height
    t = np.arange(first, first + frames, dtype=np.float32)[:, None, None]
    dx, dy, zoom = _camera(spec, t)
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    sy, sx = ys[None, :, None], xs[None, None, :]
    # screen -> world: undo zoom about the centre, then the camera shift
    wx = (sx - 0.5) / zoom + 0.5 - dx
    wy = (sy - 0.5) / zoom + 0.5 - dy
    pixel = 1.0 / height / zoom
    shape = (frames, height, width)

    horizon = HORIZON + rng.uniform(-0.03, 0.03)
    top, low = (np.array(c, np.float32) for c in SKY[spec.time])
    k = np.clip((wy - (horizon - 0.6)) / 0.6, 0, 1)[..., None]
    sky = top * (1 - k) + low * k
    sky = np.broadcast_to(sky, shape + (3,)).copy()
    cloud_color = np.array((1.0, 1.0, 1.0) if spec.time != "night" else (0.3, 0.3, 0.4), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(-0.6, 1.6), rng.uniform(0.05, horizon - 0.12)
        rx, ry = rng.uniform(0.08, 0.18), rng.uniform(0.025, 0.05)
        d = np.sqrt(((wx - cx) * aspect / rx) ** 2 + ((wy - cy) / ry) ** 2) - 1.0
        a = (_cover(d * min(rx, ry), pixel) * 0.85)[..., None]
        sky = sky * (1 - a) + cloud_color * a

    ground_base = np.array(GROUND[spec.scene], np.float32)
    depth = np.clip(wy - horizon, 1e-3, None)
    stripes = 0.06 * np.sin(2 * np.pi * (0.06 / depth) + 2 * np.pi * 0.07 * np.sin(9 * wx))
    ground = ground_base * (0.8 + 0.5 * np.clip(depth, 0, 0.6))[..., None] + stripes[..., None]
    in_ground = _cover(horizon - wy, pixel)[..., None]
    img = sky * (1 - in_ground) + ground * in_ground

    tree_color = np.array(TREE[spec.scene], np.float32)
    trunk_color = np.array(TRUNK, np.float32)
    for _ in range(int(rng.integers(4, 8))):
        tx, th = rng.uniform(-0.7, 1.7), rng.uniform(0.10, 0.22)
        tw = th * rng.uniform(0.3, 0.45)
        trunk = np.maximum(np.abs(wx - tx) * aspect - tw * 0.12, np.maximum(wy - horizon - 0.01,
                           horizon - th * 0.35 - wy))
        a = _cover(trunk, pixel)[..., None]
        img = img * (1 - a) + trunk_color * a
        # triangle canopy: apex above, base at trunk top
        base_y, apex_y = horizon - th * 0.3, horizon - th
        frac = np.clip((wy - apex_y) / (base_y - apex_y), 0, 1)
        canopy = np.maximum(np.abs(wx - tx) * aspect - tw * frac, np.maximum(apex_y - wy, wy - base_y))
        a = _cover(canopy, pixel)[..., None]
        img = img * (1 - a) + tree_color * a

    radius = SHOT_RADIUS[spec.shot] * rng.uniform(0.9, 1.1)
    ox = COMPOSITION_X[spec.composition] + rng.uniform(-0.03, 0.03)
    step = {"still": 0.0, "left": -SUBJECT_SPEED, "right": SUBJECT_SPEED}[spec.motion]
    px = ox + step * (t - (first + frames - 1) / 2)  # the motion is centred on the chosen position
    py = max(horizon + 0.06, 0.62 - 0.05 * (radius > 0.2))
    rxw = (wx - px) * aspect  # horizontal distances in height units
    ryw = wy - py
    if spec.shape == "ball":
        d = np.sqrt(rxw**2 + ryw**2) - radius
    elif spec.shape == "cube":
        d = np.maximum(np.abs(rxw), np.abs(ryw)) - radius * 0.88
    else:
        frac = np.clip((ryw + radius) / (2 * radius), 0, 1)
        d = np.maximum(np.abs(rxw) - radius * frac * 1.1, np.abs(ryw) - radius)
    color = np.array(COLORS[spec.color], np.float32)
    # simple shading so the subject reads as an object, not a flat stamp
    shade = 1.0 - 0.25 * np.clip((rxw + ryw) / (2 * radius), -1, 1)
    a = _cover(d, pixel)[..., None]
    img = img * (1 - a) + (color * shade[..., None]) * a

    img = img * TIME_LIGHT[spec.time]
    if spec.light == "side light":
        img = img * (1.3 - 0.6 * sx)[..., None]
    elif spec.light == "top light":
        img = img * (1.3 - 0.6 * sy)[..., None]
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    contrast = {"soft light": 0.65, "hard light": 1.45}.get(spec.light, 1.0)
    img = mean + (img - mean) * contrast
    img = img * np.array(TONE_GAIN[spec.tone], np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def subject_mask(spec: ClipSpec, frames: int = 17, height: int = 64, width: int = 64) -> np.ndarray:
    """Where the subject is in each frame (bool, (frames, height, width)): renders twice, compares."""
    other = COLORS_ALT[spec.color]
    a = render(spec, frames, height, width)
    b = render(ClipSpec(**{**spec.to_dict(), "color": other}), frames, height, width)
    return np.abs(a - b).sum(axis=-1) > 0.05


COLORS_ALT = {c: ("blue" if c != "blue" else "yellow") for c in COLORS}
