"""Form widget values <-> GenerationRequest: the one place that maps controls to request fields.

The UI passes its form widgets in `FORM_FIELDS` order; handlers zip them into a dict with
`form_dict`, and everything else works with names, never positions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pipelines.errors import RequestError
from pipelines.prompting import VOCABULARY, CinematicControls, compose_prompt
from pipelines.recipe import Recipe
from pipelines.request import (DEFAULT_NEGATIVE_PROMPT, GenerationRequest, ValidatedRequest,
                               VariantDefaults, build_request)
from pipelines.variants import VARIANTS, get_variant

CONTROL_FIELDS: tuple[str, ...] = tuple(VOCABULARY)
SETTING_FIELDS: tuple[str, ...] = ("variant", "prompt", "negative_prompt", "image", "width", "height",
                                   "frames", "steps", "seed", "guidance", "guidance_low", "flow_shift")
LORA_SLOTS = 2  # LoRAs a take may carry from the form (each with a strength per expert)
LORA_FIELDS: tuple[str, ...] = tuple(f"lora_{i}{part}" for i in range(1, LORA_SLOTS + 1)
                                     for part in ("", "_high", "_low"))
SPEED_FIELDS: tuple[str, ...] = ("cache", "compile", "attention")
# `end_image`: the frame an i2v-a14b take ends on; `variations`: how many takes (seeds) to queue
EXTRA_FIELDS: tuple[str, ...] = ("end_image", "variations", "preset", "image_fit", *LORA_FIELDS,
                                 *SPEED_FIELDS)
FORM_FIELDS: tuple[str, ...] = SETTING_FIELDS + EXTRA_FIELDS + CONTROL_FIELDS
NONE = ""  # an unpicked dropdown

# build_request's field names -> the form control that shows the message
ERROR_TARGETS: dict[str, str] = {"image_path": "image", "last_image_path": "end_image",
                                 "fps": "frames", "preview.max_side": "steps",
                                 "preview.decode_every": "steps"}
ERROR_SLOTS: tuple[str, ...] = ("variant", "prompt", "image", "controls", "settings")
RANDOM_SEED = -1
CUSTOM = "custom"


@dataclass(frozen=True)
class FormRequest:
    """A validated request plus what the form held: the user's own text and the controls."""

    request: GenerationRequest
    notices: tuple[str, ...]
    user_prompt: str
    controls: CinematicControls

    @property
    def image(self) -> str | None:
        """The start image file the form names (an upload or a scratch file), if any."""
        return self.request.image_path

    @property
    def end_image(self) -> str | None:
        """The end image file the form names, if any (i2v-a14b only)."""
        return self.request.last_image_path

    def recipe(self) -> Recipe:
        """The take's recipe: the request (no path in it), the user's text and the controls."""
        return Recipe(self.request, user_prompt=self.user_prompt, controls=self.controls)


@dataclass(frozen=True)
class FormFill:
    """Form values to load (by field name), the lineage the next take records, and a message."""

    values: dict[str, Any]
    lineage: dict[str, Any] | None
    message: str


def form_dict(values: Sequence[Any]) -> dict[str, Any]:
    """Zip widget values given in `FORM_FIELDS` order into a dict."""
    if len(values) != len(FORM_FIELDS):
        raise ValueError(f"Expected {len(FORM_FIELDS)} form values, got {len(values)}.")
    return dict(zip(FORM_FIELDS, values))


def error_slot(field: str | None) -> str:
    """Which message slot sits next to the control named by a RequestError's field."""
    if field in ("variant", "prompt", "image"):
        return str(field)
    if field == "end_image":
        return "image"
    if field in CONTROL_FIELDS or field == "controls":
        return "controls"
    return "settings" if field else "prompt"


def controls_from_form(form: Mapping[str, Any]) -> CinematicControls:
    """The cinematic controls chosen in the form (RequestError on a value outside the vocabulary)."""
    try:
        return CinematicControls.from_dict({k: form.get(k) for k in CONTROL_FIELDS})
    except ValueError as exc:
        raise RequestError(str(exc), "controls") from None


def image_mode(variant_id: str, image: str | None) -> bool:
    """Whether a run animates a start image (i2v always; ti2v when an image is given)."""
    try:
        spec = get_variant(variant_id)
    except ValueError:
        return False
    return spec.image_input == "required" or (spec.image_input == "optional" and bool(image))


def final_prompt(form: Mapping[str, Any]) -> str:
    """The prompt that will be sent: the user's text composed with the chosen controls."""
    controls = controls_from_form(form)
    return compose_prompt(str(form.get("prompt") or ""), controls,
                          image_mode(str(form.get("variant") or ""), form.get("image")))


def request_from_form(form: Mapping[str, Any], defaults: VariantDefaults | None) -> FormRequest:
    """Validate the form into a request; raises RequestError naming the form control at fault."""
    controls = controls_from_form(form)
    raw = {name: form.get(name) for name in SETTING_FIELDS if name != "image"}
    raw["prompt"] = final_prompt(form)
    raw["image_path"] = form.get("image") or None
    raw["last_image_path"] = form.get("end_image") or None
    for name, key in (("image", "image_path"), ("end_image", "last_image_path")):
        if raw[key]:
            _check_image_size(raw[key], name)
    raw["preset"] = form.get("preset") or None
    raw["image_fit"] = form.get("image_fit") or None
    raw["loras"] = loras_from_form(form)
    raw["speed"] = speed_from_form(form)
    if raw.get("negative_prompt") is None:
        raw["negative_prompt"] = DEFAULT_NEGATIVE_PROMPT
    variant_id = str(form.get("variant") or "")
    if variant_id in VARIANTS and get_variant(variant_id).experts == 1:
        raw.pop("guidance_low")
    try:
        validated: ValidatedRequest = build_request(raw, defaults)
    except RequestError as exc:
        raise RequestError(str(exc), ERROR_TARGETS.get(exc.field or "", exc.field)) from None
    return FormRequest(validated.request, validated.notices, str(form.get("prompt") or "").strip(),
                       controls)


def variation_count(form: Mapping[str, Any]) -> int:
    """How many takes the form asks for: 1, or 2-8 variations (RequestError otherwise)."""
    from pipelines.request import MAX_VARIATIONS

    value = form.get("variations")
    if value in (None, ""):
        return 1
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() \
            and len(value.strip()) <= 3:  # '²' is a digit to str.isdigit, not to int()
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VARIATIONS:
        raise RequestError(f"Variations must be a whole number from 1 to {MAX_VARIATIONS}.",
                           "variations")
    return int(value)


def _check_image_size(path: str, field: str = "image") -> None:
    """A start or end image over the size limit is refused before it is decoded."""
    from .limits import MAX_IMAGE_BYTES

    try:
        size = os.path.getsize(path)
    except OSError:
        return  # missing: build_request says so
    if size > MAX_IMAGE_BYTES:
        which = "end" if field == "end_image" else "start"
        raise RequestError(f"The {which} image is {size / 2**20:.0f} MiB; use one of at most "
                           f"{MAX_IMAGE_BYTES // 2**20} MiB.", field)


def loras_from_form(form: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The LoRAs the form picked: structured `loras` (the API), else the form's slots."""
    if form.get("loras"):
        return list(form["loras"])
    picked = []
    for i in range(1, LORA_SLOTS + 1):
        source = str(form.get(f"lora_{i}") or "").strip()
        if source:
            high, low = form.get(f"lora_{i}_high"), form.get(f"lora_{i}_low")
            picked.append({"source": source, "high": 1.0 if high is None else high,
                           "low": 1.0 if low is None else low})
    return picked


def speed_from_form(form: Mapping[str, Any]) -> dict[str, Any] | None:
    """The speed levers the form picked: structured `speed` (the API), else its three controls."""
    if form.get("speed"):
        return dict(form["speed"])
    if not any(form.get(name) for name in SPEED_FIELDS):
        return None
    return {"cache": form.get("cache") or "none", "compile": bool(form.get("compile")),
            "attention": form.get("attention") or "native"}


def size_presets(variant_id: str, defaults: VariantDefaults) -> list[str]:
    """Size choices ("WxH") for a variant: its defaults first, then the official sizes, then custom."""
    spec = get_variant(variant_id)
    sizes = [(defaults.width, defaults.height), *spec.sizes]
    labels = list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    return labels + [CUSTOM]


def frame_presets(defaults: VariantDefaults) -> list[int]:
    """Valid (4n+1) frame counts to pick from, including the variant's default."""
    return sorted({defaults.frames, 17, 33, 49, 81, 121} - {0})


def parse_size(label: str) -> tuple[int, int] | None:
    """("832x480") -> (832, 480); None for "custom" or anything else."""
    width, sep, height = str(label or "").partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


def form_for_variant(variant_id: str, defaults: VariantDefaults) -> dict[str, Any]:
    """Widget values when switching to a variant: its (official or weights-declared) defaults."""
    spec = get_variant(variant_id)
    return {"width": defaults.width, "height": defaults.height, "frames": defaults.frames,
            "steps": defaults.steps, "guidance": defaults.guidance,
            "guidance_low": defaults.guidance_low if spec.experts == 2 else None,
            "flow_shift": defaults.flow_shift, "size_preset": f"{defaults.width}x{defaults.height}"}


def form_from_recipe(recipe: Recipe) -> dict[str, Any]:
    """Form values that reproduce a take's settings ("remix"), controls included; the start
    image is the caller's to fill (from the media store)."""
    request = recipe.request
    values: dict[str, Any] = {
        "variant": request.variant, "prompt": recipe.user_prompt,
        "negative_prompt": request.negative_prompt, "image": None, "end_image": None,
        "variations": 1,
        "width": request.width, "height": request.height, "frames": request.frames,
        "steps": request.steps, "seed": request.seed, "guidance": request.guidance,
        "guidance_low": request.guidance_low, "flow_shift": request.flow_shift,
    }
    controls = recipe.controls.to_dict()
    for name in CONTROL_FIELDS:
        values[name] = controls.get(name)
    values.update(preset=request.preset or NONE, image_fit=request.image_fit,
                  cache=request.speed.cache, compile=request.speed.compile,
                  attention=request.speed.attention)
    for i in range(1, LORA_SLOTS + 1):
        lora = request.loras[i - 1] if i <= len(request.loras) else None
        values[f"lora_{i}"] = lora.source if lora else NONE
        values[f"lora_{i}_high"] = lora.high if lora else 1.0
        values[f"lora_{i}_low"] = lora.low if lora else 1.0
    return values


def settings_summary(recipe: Recipe) -> list[tuple[str, str]]:
    """(label, value) rows describing a take's recipe, for the take detail panel."""
    request = recipe.request
    guidance = f"{request.guidance:g}" + (f" / {request.guidance_low:g}"
                                          if request.guidance_low is not None else "")
    extras = []
    if recipe.preset:
        extras.append(("Preset", recipe.preset))
    for lora in recipe.loras or [{"name": c.source, "high": c.high, "low": c.low}
                                  for c in request.loras]:
        extras.append(("LoRA", f"{lora.get('name')} (high {lora.get('high'):g}, low "
                               f"{lora.get('low'):g})"))
    if not request.speed.is_default:
        extras.append(("Speed", f"cache {request.speed.cache}, attention {request.speed.attention}"
                                f"{', compiled' if request.speed.compile else ''}"))
    return [("Variant", request.variant), ("Size", f"{request.width}x{request.height}"),
            ("Frames", f"{request.frames} at {request.fps} fps"), ("Steps", str(request.steps)),
            ("Seed", str(request.seed)), ("Guidance (high / low)" if request.guidance_low is not None
                                          else "Guidance", guidance),
            ("Flow shift", f"{request.flow_shift:g}"), ("Prompt", request.prompt),
            *((("Weights", recipe.weights),) if recipe.weights else ()),
            *((("Memory profile", recipe.profile),) if recipe.profile else ()),
            *((("End image", "the take ends on its stored end image"),) if recipe.end_image else ()),
            *extras]
