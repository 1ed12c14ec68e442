"""The one request type that flows UI -> runner -> engine, and its validation.

`build_request` is the only way to make a `GenerationRequest` from loose user input: it fills
defaults, snaps sizes and frame counts to what the variant accepts (saying so in notices), and
refuses values outside sane bounds with a `RequestError` naming the field.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import RequestError
from .images import check_image
from .variants import VariantSpec, get_variant

DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

MIN_SIDE = 64
MIN_FRAMES, MAX_FRAMES = 5, 241
MIN_STEPS, MAX_STEPS = 1, 100
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1
MAX_SHIFT = 50.0
MAX_FPS = 60
MAX_PROMPT_CHARS = 4000  # the text encoder reads 512 tokens, about 2,000 characters of English


@dataclass(frozen=True)
class PreviewSettings:
    """How previews are made while denoising."""

    enabled: bool = True
    max_side: int = 256  # longest side of preview frames, in pixels
    decode_every: int = 0  # decode a full-quality preview with the real VAE every N steps (0: never)


@dataclass(frozen=True)
class VariantDefaults:
    """The values a request starts from: the official ones, or those a weights folder declares."""

    width: int
    height: int
    frames: int
    fps: int
    steps: int
    flow_shift: float
    guidance: float
    guidance_low: float | None

    @classmethod
    def official(cls, spec: VariantSpec) -> "VariantDefaults":
        """The values from the Wan2.2 reference configs."""
        width, height = spec.default_size
        return cls(width, height, spec.frames, spec.fps, spec.steps, spec.flow_shift,
                   spec.guidance, spec.guidance_low)

    def updated(self, overrides: Mapping[str, Any]) -> "VariantDefaults":
        """A copy with the known keys of `overrides` applied (unknown keys are ignored)."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in names})


@dataclass(frozen=True)
class GenerationRequest:
    """One fully specified, validated generation: what is run, stored and embedded in the MP4."""

    variant: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    seed: int
    guidance: float
    guidance_low: float | None
    flow_shift: float
    image_path: str | None = None
    preview: PreviewSettings = field(default_factory=PreviewSettings)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting."""
        return asdict(self)

    def to_json(self) -> str:
        """The request as compact JSON (keys sorted, so equal requests give equal text)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenerationRequest":
        """Rebuild a request from `to_dict` output, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["preview"] = PreviewSettings(**dict(values.get("preview") or {}))
        return cls(**values)


@dataclass(frozen=True)
class ValidatedRequest:
    """A request plus the notices about what validation changed."""

    request: GenerationRequest
    notices: tuple[str, ...] = ()


def snap_to_multiple(value: int, multiple: int) -> int:
    """Nearest multiple of `multiple` (ties go up), never below `multiple`."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def snap_frames(frames: int) -> int:
    """Nearest frame count of the form 4n+1 (ties go up)."""
    return 4 * int(math.floor((frames - 1) / 4 + 0.5)) + 1


def _number(raw: Any, name: str, kind: type) -> Any:
    """Coerce a loose value (str, float, int) to int or float, or raise a RequestError."""
    if isinstance(raw, bool):
        raise RequestError(f"{name} must be a number, not {_shown(raw)}.", name)
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name} must be a number of sensible size, got {_shown(raw)}.", name) from None
    if not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {_shown(raw)}.", name)
    if kind is int:
        if value != int(value):
            raise RequestError(f"{name} must be a whole number, got {_shown(raw)}.", name)
        return int(value)
    return value


def _shown(raw: Any, limit: int = 40) -> str:
    """A user's value as it may appear in a message: repr, cut to `limit` characters."""
    text = repr(raw) if not isinstance(raw, int) or abs(raw) < 10**30 else f"a {len(str(abs(raw)))}-digit number"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_length(text: str, name: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"The {name.replace('_', ' ')} has {len(text):,} characters; the most is "
            f"{MAX_PROMPT_CHARS:,} (the text encoder reads about 512 tokens): shorten it.", name)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _in_range(value: float, low: float, high: float, name: str, hint: str = "") -> None:
    if not low <= value <= high:
        extra = f" {hint}" if hint else ""
        raise RequestError(
            f"{name} must be between {_fmt(low)} and {_fmt(high)}, got {_fmt(value)}.{extra}", name)


def build_request(
    raw: Mapping[str, Any],
    defaults: VariantDefaults | None = None,
    *,
    rng: random.Random | None = None,
) -> ValidatedRequest:
    """Validate loose input (missing or None values take defaults) into a request and notices."""
    variant_id = str(raw.get("variant") or "").strip()
    if not variant_id:
        raise RequestError("Choose a variant.", "variant")
    try:
        spec = get_variant(variant_id)
    except ValueError as exc:
        raise RequestError(str(exc), "variant") from None
    base = defaults or VariantDefaults.official(spec)
    notices: list[str] = []

    def value(name: str, fallback: Any) -> Any:
        got = raw.get(name)
        return fallback if got is None or (isinstance(got, str) and not got.strip()) else got

    prompt = str(raw.get("prompt") or "").strip()
    _check_length(prompt, "prompt")
    image_path = raw.get("image_path") or None
    if image_path is not None:
        image_path = str(image_path)
    if spec.image_input == "none" and image_path:
        raise RequestError(
            f"{spec.id} makes video from text only; remove the image or pick i2v-a14b or ti2v-5b.",
            "image_path",
        )
    if spec.image_input == "required" and not image_path:
        raise RequestError(f"{spec.id} needs a start image; upload one.", "image_path")
    if image_path:
        check_image(image_path)
    if not prompt and spec.image_input != "required":
        raise RequestError("Write a prompt: describe the subject, the scene and the motion.", "prompt")
    negative = raw.get("negative_prompt")
    negative = DEFAULT_NEGATIVE_PROMPT if negative is None else str(negative).strip()
    _check_length(negative, "negative_prompt")

    width = _number(value("width", base.width), "width", int)
    height = _number(value("height", base.height), "height", int)
    for name, side in (("width", width), ("height", height)):
        _in_range(side, MIN_SIDE, spec.max_side, name, f"({spec.id} goes up to {spec.max_side} px.)")
    snapped_w, snapped_h = (snap_to_multiple(width, spec.size_multiple),
                            snap_to_multiple(height, spec.size_multiple))
    snapped_w, snapped_h = min(snapped_w, spec.max_side), min(snapped_h, spec.max_side)
    if (snapped_w, snapped_h) != (width, height):
        notices.append(
            f"Size {width}x{height} snapped to {snapped_w}x{snapped_h}: "
            f"{spec.id} needs multiples of {spec.size_multiple}."
        )

    frames = _number(value("frames", base.frames), "frames", int)
    _in_range(frames, MIN_FRAMES, MAX_FRAMES, "frames")
    snapped_frames = snap_frames(frames)
    if snapped_frames > MAX_FRAMES:
        snapped_frames -= 4
    if snapped_frames != frames:
        notices.append(f"Frames {frames} snapped to {snapped_frames}: Wan needs 4n+1 frames.")

    fps = _number(value("fps", base.fps), "fps", int)
    _in_range(fps, 1, MAX_FPS, "fps")
    steps = _number(value("steps", base.steps), "steps", int)
    _in_range(steps, MIN_STEPS, MAX_STEPS, "steps")

    seed_raw = raw.get("seed")
    if seed_raw is None or (isinstance(seed_raw, str) and not seed_raw.strip()) or seed_raw == -1:
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
    else:
        seed = _number(seed_raw, "seed", int)
        _in_range(seed, 0, MAX_SEED, "seed", "(Leave it empty or -1 for a random seed.)")

    guidance = _number(value("guidance", base.guidance), "guidance", float)
    _in_range(guidance, 0.0, MAX_GUIDANCE, "guidance")
    guidance_low: float | None = None
    if spec.experts == 2:
        guidance_low = _number(value("guidance_low", base.guidance_low), "guidance_low", float)
        _in_range(guidance_low, 0.0, MAX_GUIDANCE, "guidance_low")
    elif raw.get("guidance_low") is not None:
        notices.append(f"{spec.id} has one model: the low-noise guidance was ignored.")

    flow_shift = _number(value("flow_shift", base.flow_shift), "flow_shift", float)
    if not 0.0 < flow_shift <= MAX_SHIFT:
        raise RequestError(f"flow_shift must be above 0 and at most {MAX_SHIFT:g}, got {flow_shift:g}.",
                           "flow_shift")

    preview_raw = raw.get("preview") or {}
    if isinstance(preview_raw, PreviewSettings):
        preview = preview_raw
    else:
        preview = PreviewSettings(**dict(preview_raw))
    _in_range(_number(preview.max_side, "preview.max_side", int), 16, 1024, "preview.max_side")
    _in_range(_number(preview.decode_every, "preview.decode_every", int), 0, MAX_STEPS,
              "preview.decode_every")

    request = GenerationRequest(
        variant=spec.id, prompt=prompt, negative_prompt=negative,
        width=snapped_w, height=snapped_h, frames=snapped_frames, fps=fps, steps=steps, seed=seed,
        guidance=guidance, guidance_low=guidance_low, flow_shift=flow_shift,
        image_path=image_path, preview=preview,
    )
    return ValidatedRequest(request, tuple(notices))
