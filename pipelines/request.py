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
from .images import check_image, fit_to_area
from .presets import get_preset
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
MIN_VARIATIONS, MAX_VARIATIONS = 2, 8  # takes in one batch of variations


@dataclass(frozen=True)
class PreviewSettings:
    """How previews are made while denoising."""

    enabled: bool = True
    max_side: int = 256  # longest side of preview frames, in pixels
    decode_every: int = 0  # decode a full-quality preview with the real VAE every N steps (0: never)


MAX_LORAS = 8
MAX_LORA_STRENGTH = 4.0
IMAGE_FITS = ("fit", "crop")  # fit: the image's aspect at the requested area; crop: fill the box
CACHES = ("none", "first-block", "taylorseer", "magcache")
# diffusers attention backends the studio offers; all but "native" need CUDA and a kernel package
ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "_native_cudnn", "_native_flash",
                      "_native_efficient", "flex")


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA of a take: where it comes from and its strength on each expert.

    `source` is a file name in the studio's LoRA folder, a path, or a Hub id (`owner/name` holding
    one .safetensors file, or `owner/name/path/in/repo.safetensors`). `high` is the strength on
    the high-noise expert (`transformer`, and the only expert of TI2V-5B); `low` on the low-noise
    expert (`transformer_2`). A strength of 0 keeps the LoRA off that expert entirely.
    """

    source: str
    high: float = 1.0
    low: float = 1.0


@dataclass(frozen=True)
class SpeedSettings:
    """Speed levers of one take; each is off unless chosen and undone after the take.

    cache: a step cache on each expert through diffusers' hooks ("first-block", "taylorseer", or
    "magcache", which needs calibrated ratios per expert). compile: `compile_repeated_blocks` on
    the transformers. attention: a diffusers attention backend; "native" is PyTorch's SDPA.
    """

    cache: str = "none"
    cache_threshold: float | None = None  # first-block / magcache threshold (None: diffusers' default)
    cache_interval: int | None = None  # taylorseer: steps between full computations (None: 5)
    mag_ratios_high: tuple[float, ...] = ()  # magcache ratios calibrated on the high-noise expert
    mag_ratios_low: tuple[float, ...] = ()  # and on the low-noise expert (A14B)
    compile: bool = False
    attention: str = "native"

    @property
    def is_default(self) -> bool:
        """Whether nothing is chosen (a plain take)."""
        return self == SpeedSettings()


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
    image_fit: str = "fit"
    loras: tuple[LoraChoice, ...] = ()
    preset: str | None = None
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    # an end image (i2v-a14b only): the video ends on it; fitted to width x height like the start
    last_image_path: str | None = None

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
        values["loras"] = tuple(_lora_from(item) for item in values.get("loras") or ())
        speed = dict(values.get("speed") or {})
        for name in ("mag_ratios_high", "mag_ratios_low"):
            speed[name] = tuple(speed.get(name) or ())
        values["speed"] = SpeedSettings(**speed)
        return cls(**values)


def _lora_from(item: Any) -> LoraChoice:
    """A LoraChoice from itself, a dict of its fields, or `SOURCE[:high=S,low=S]` text."""
    if isinstance(item, LoraChoice):
        return item
    if isinstance(item, Mapping):
        names = {f.name for f in fields(LoraChoice)}
        return LoraChoice(**{k: v for k, v in item.items() if k in names})
    return parse_lora(str(item))


def parse_lora(text: str) -> LoraChoice:
    """`SOURCE`, `SOURCE:S` (both experts) or `SOURCE:high=S,low=S` to a LoraChoice.

    Only a trailing `:...` made of strengths is read as strengths, so Windows drive letters and
    Hub ids stay whole. Raises RequestError (field "loras") on a malformed strength.
    """
    text = text.strip()
    source, sep, tail = text.rpartition(":")
    if not sep or not tail or "/" in tail or "\\" in tail or tail.lower().endswith(".safetensors"):
        return LoraChoice(text)
    strengths: dict[str, float] = {}
    for part in tail.split(","):
        name, eq, number = part.partition("=")
        if not eq:
            name, number = "both", name
        name = name.strip().lower()
        if name not in ("high", "low", "both"):
            raise RequestError(f"The LoRA {text!r} has an unknown strength {part!r}; write "
                               "SOURCE:high=S,low=S or SOURCE:S.", "loras")
        try:
            value = float(number)
        except ValueError:
            raise RequestError(f"The LoRA strength {part!r} in {text!r} is not a number.",
                               "loras") from None
        if name == "both":
            strengths["high"] = strengths["low"] = value
        else:
            strengths[name] = value
    return LoraChoice(source.strip(), strengths.get("high", 1.0), strengths.get("low", 1.0))


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
    preset_id = str(raw.get("preset") or "").strip() or None
    if preset_id is not None:
        base = _with_preset(base, preset_id, spec)

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
    image_size = check_image(image_path) if image_path else None
    last_image_path = _last_image(raw.get("last_image_path"), spec, image_path)
    image_fit = str(raw.get("image_fit") or "fit").strip().lower()
    if image_fit not in IMAGE_FITS:
        raise RequestError(f"image_fit must be one of {', '.join(IMAGE_FITS)}, got {image_fit!r}.",
                           "image_fit")
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

    if image_size is not None and image_fit == "fit":
        fitted = fit_to_area(image_size, (snapped_w, snapped_h), spec.size_multiple, MIN_SIDE,
                             spec.max_side)
        if fitted != (snapped_w, snapped_h):
            notices.append(
                f"Size {fitted[0]}x{fitted[1]} used: the start image is {image_size[0]}x"
                f"{image_size[1]}, so the video keeps its shape at about the area of "
                f"{snapped_w}x{snapped_h} (set image_fit to crop to fill {snapped_w}x{snapped_h})."
            )
            snapped_w, snapped_h = fitted

    if last_image_path is not None:
        _note_end_image_shape(check_image(last_image_path, "last_image_path"),
                              (snapped_w, snapped_h), notices)

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

    _check_guidance_pair(guidance, guidance_low, spec, notices)

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

    loras = _loras(raw.get("loras"), spec, notices)
    speed = _speed(raw.get("speed"), spec)
    if preset_id is not None:
        preset = get_preset(preset_id)
        notices.append(f"Preset {preset.label}: {steps} steps, guidance {_fmt(guidance)}, "
                       f"shift {_fmt(flow_shift)}, with its distill LoRA"
                       f"{'s' if preset.low_file else ''}.")

    request = GenerationRequest(
        variant=spec.id, prompt=prompt, negative_prompt=negative,
        width=snapped_w, height=snapped_h, frames=snapped_frames, fps=fps, steps=steps, seed=seed,
        guidance=guidance, guidance_low=guidance_low, flow_shift=flow_shift,
        image_path=image_path, preview=preview, image_fit=image_fit, loras=loras,
        preset=preset_id, speed=speed, last_image_path=last_image_path,
    )
    return ValidatedRequest(request, tuple(notices))


def _last_image(raw: Any, spec: VariantSpec, image_path: str | None) -> str | None:
    """The end image's path when this variant can end on one; a RequestError otherwise."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not spec.takes_last_image:
        if spec.takes_image:  # TI2V-5B: diffusers' image pipeline ignores last_image there
            raise RequestError(
                f"{spec.id} cannot end on a chosen image (its pipeline conditions only the first "
                "frame); remove the end image or pick i2v-a14b.", "last_image_path")
        raise RequestError(f"{spec.id} makes video from text only; remove the end image or pick "
                           "i2v-a14b.", "last_image_path")
    if not image_path:
        raise RequestError("An end image needs a start image too; upload one.", "image_path")
    return str(raw)


def _note_end_image_shape(image_size: tuple[int, int], video: tuple[int, int],
                          notices: list[str]) -> None:
    """Say so when the end image is cropped: it is fitted to the video's size like the start image."""
    (image_w, image_h), (width, height) = image_size, video
    if abs(image_w / image_h - width / height) > 0.02 * width / height:  # past 2%: visibly cut
        notices.append(f"The end image is {image_w}x{image_h}; it was scaled and centre-cropped to "
                       f"the video's {width}x{height}, so its edges are cut off.")


def variation_seeds(seed: Any, count: Any) -> list[int]:
    """The seeds of a batch of variations: `count` (2-8) consecutive seeds from `seed`, wrapping
    past the largest seed to 0; a RequestError naming the field otherwise."""
    count = _number(count, "variations", int)
    _in_range(count, MIN_VARIATIONS, MAX_VARIATIONS, "variations")
    seed = _number(seed, "seed", int)
    _in_range(seed, 0, MAX_SEED, "seed")
    return [(seed + offset) % (MAX_SEED + 1) for offset in range(count)]


def _with_preset(base: VariantDefaults, preset_id: str, spec: VariantSpec) -> VariantDefaults:
    """The defaults with a distill preset's steps, guidance and shift (the user's values still win)."""
    try:
        preset = get_preset(preset_id)
    except ValueError as exc:
        raise RequestError(str(exc), "preset") from None
    if preset.variant != spec.id:
        raise RequestError(f"The preset {preset.id} is made for {preset.variant}, not {spec.id}; "
                           "pick one of this variant's presets or none.", "preset")
    return replace(base, steps=preset.steps, guidance=preset.guidance,
                   guidance_low=preset.guidance_low if spec.experts == 2 else base.guidance_low,
                   flow_shift=preset.flow_shift)


def _check_guidance_pair(guidance: float, guidance_low: float | None, spec: VariantSpec,
                         notices: list[str]) -> None:
    """Refuse a guidance pair diffusers would silently change; say when the negative prompt is unused.

    diffusers decides classifier-free guidance once per run from the high-noise guidance alone, so
    high <= 1 with low > 1 would run the low-noise expert without its negative pass too.
    """
    if spec.experts == 2 and guidance_low is not None and guidance <= 1.0 < guidance_low:
        raise RequestError(
            f"guidance {_fmt(guidance)} (high-noise) turns the negative prompt off for both experts, "
            f"so guidance_low {_fmt(guidance_low)} would not apply: raise guidance above 1, or set "
            "guidance_low to 1 or less too.", "guidance")
    if guidance <= 1.0:
        notices.append(f"Guidance {_fmt(guidance)}: one pass per step, and the negative prompt "
                       "is not used.")


def _loras(raw: Any, spec: VariantSpec, notices: list[str]) -> tuple[LoraChoice, ...]:
    """Validate the take's LoRA choices: sources present, strengths finite and bounded."""
    if raw is None or raw == "":
        return ()
    items = [raw] if isinstance(raw, (str, LoraChoice, Mapping)) else list(raw)
    if len(items) > MAX_LORAS:
        raise RequestError(f"At most {MAX_LORAS} LoRAs per take, got {len(items)}.", "loras")
    choices = []
    for item in items:
        choice = _lora_from(item)
        source = str(choice.source or "").strip()
        if not source:
            raise RequestError("A LoRA has no source: give a file name, a path or a Hub id.", "loras")
        high = _number(choice.high, "loras.high", float)
        low = _number(choice.low, "loras.low", float)
        for name, strength in (("loras.high", high), ("loras.low", low)):
            _in_range(strength, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH, name)
        if spec.experts == 1 and low not in (high, 0.0, 1.0):
            notices.append(f"{spec.id} has one model: the low-noise strength of {source} was "
                           "ignored (the high-noise strength applies).")
        if high == 0.0 and (low == 0.0 or spec.experts == 1):
            notices.append(f"The LoRA {source} has strength 0 everywhere and was left out.")
            continue
        choices.append(LoraChoice(source, high, low))
    return tuple(choices)


def _speed(raw: Any, spec: VariantSpec) -> SpeedSettings:
    """Validate the speed levers: a known cache with sane settings, a known attention backend."""
    if raw is None:
        return SpeedSettings()
    if isinstance(raw, SpeedSettings):
        values = asdict(raw)
    elif isinstance(raw, Mapping):
        names = {f.name for f in fields(SpeedSettings)}
        values = {k: v for k, v in raw.items() if k in names}
    else:
        raise RequestError("speed must be a mapping of speed settings.", "speed")
    cache = str(values.get("cache") or "none").strip().lower()
    if cache not in CACHES:
        raise RequestError(f"speed.cache must be one of {', '.join(CACHES)}, got {cache!r}.",
                           "speed.cache")
    threshold = values.get("cache_threshold")
    if threshold is not None:
        threshold = _number(threshold, "speed.cache_threshold", float)
        _in_range(threshold, 0.0, 1.0, "speed.cache_threshold")
    interval = values.get("cache_interval")
    if interval is not None:
        interval = _number(interval, "speed.cache_interval", int)
        _in_range(interval, 1, MAX_STEPS, "speed.cache_interval")
    ratios = {}
    for name in ("mag_ratios_high", "mag_ratios_low"):
        ratios[name] = tuple(_number(r, f"speed.{name}", float) for r in values.get(name) or ())
    if cache == "magcache":
        wanted = ("mag_ratios_high", "mag_ratios_low") if spec.experts == 2 else ("mag_ratios_high",)
        missing = [name for name in wanted if not ratios[name]]
        if missing:
            raise RequestError(
                "MagCache needs magnitude ratios calibrated on these weights for each expert "
                f"({', '.join('speed.' + m for m in missing)}); pick first-block or taylorseer "
                "instead, or calibrate first.", "speed.cache")
    attention = str(values.get("attention") or "native").strip().lower()
    if attention not in ATTENTION_BACKENDS:
        raise RequestError(f"speed.attention must be one of {', '.join(ATTENTION_BACKENDS)}, got "
                           f"{attention!r}.", "speed.attention")
    compile_ = values.get("compile", False)
    if not isinstance(compile_, bool):
        raise RequestError(f"speed.compile must be true or false, got {compile_!r}.", "speed.compile")
    return SpeedSettings(cache=cache, cache_threshold=threshold, cache_interval=interval,
                         compile=compile_, attention=attention, **ratios)
