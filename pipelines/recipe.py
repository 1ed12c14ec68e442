"""A take's recipe: everything that made it, in one frozen value, with no path in it.

The database row, the MP4's embedded settings, the API and the share page all read the same
recipe. It is built once the start image is stored (the recipe names the image by its content
hash, never by where it lies), and completed by the run with what only the run knows (which
weights, memory profile and studio version made it).

    recipe = Recipe(request, user_prompt="a red ball", controls=controls)
    stored = recipe.to_dict()                 # what storage keeps and write_mp4 embeds
    again = Recipe.from_dict(read_settings(mp4))

`from_dict` also reads what older studios wrote: the studio's flat request dict (with its
"studio" extras) and the command line's {"request", "weights_source", "studio_version"}.

Images are named by content hash: `start_image`, and `end_image` for an i2v-a14b take that ends
on a chosen frame. A longer shot assembled from a take and its extensions (pipelines.extend)
embeds {"format": "wan-studio-shot", "version": 1, "parts": [recipe dicts, parent first]}:
`shot_settings` makes it, `shot_parts` reads it back. Compare lists what differs between two
recipes with `recipe_differences`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ShotError
from .prompting import CinematicControls
from .request import GenerationRequest

STUDIO_VERSION = "0.2.0"
FORMAT = "wan-studio-recipe"
VERSION = 1
# an assembled shot (a take and its extensions, pipelines.extend) embeds every part's recipe
SHOT_FORMAT = "wan-studio-shot"
SHOT_VERSION = 1
MAX_PARTS = 32  # a chain longer than this is almost certainly a loop in someone's lineage


@dataclass(frozen=True)
class Recipe:
    """One take's full recipe (see module docstring)."""

    request: GenerationRequest
    user_prompt: str = ""
    controls: CinematicControls = field(default_factory=CinematicControls)
    start_image: str | None = None  # sha256 of the stored start image, when there is one
    weights: str | None = None  # which weights made it: a Hub id, "demo", or "local folder <name>"
    studio_version: str = STUDIO_VERSION
    profile: str | None = None  # the memory profile the run used
    preset: str | None = None  # a step-distill preset, if one was picked
    loras: tuple[Mapping[str, Any], ...] = ()  # {"name", "sha256", "high", "low"} each
    end_image: str | None = None  # sha256 of the stored end image (i2v-a14b's last_image), if any

    def __post_init__(self) -> None:
        if self.request.image_path is not None or self.request.last_image_path is not None:
            # the paths stay with the run, never here
            object.__setattr__(self, "request", replace(self.request, image_path=None,
                                                        last_image_path=None))
        if self.request.loras:  # a LoRA given by path is named by its file name alone
            named = tuple(replace(lora, source=lora_name(lora.source)) for lora in self.request.loras)
            object.__setattr__(self, "request", replace(self.request, loras=named))
        if self.preset is None and self.request.preset:
            object.__setattr__(self, "preset", self.request.preset)

    @property
    def variant(self) -> str:
        """The variant that makes (or made) the take."""
        return self.request.variant

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data: stored on the take and embedded in its MP4."""
        request = self.request.to_dict()
        request.pop("image_path", None)
        request.pop("last_image_path", None)
        return {"format": FORMAT, "version": VERSION, "request": request,
                "user_prompt": self.user_prompt, "controls": self.controls.to_dict(),
                "start_image": self.start_image, "end_image": self.end_image,
                "weights": self.weights,
                "studio_version": self.studio_version, "profile": self.profile,
                "preset": self.preset, "loras": [dict(lora) for lora in self.loras]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """A recipe from `to_dict` output, from what older studios and the CLI stored, or, given an
        assembled shot's settings, the shot's newest part (`shot_parts` gives them all)."""
        if not isinstance(data, Mapping):
            raise ValueError("A recipe must be a JSON object.")
        if is_shot(data):  # an assembled shot: its newest part, the one to remix or extend
            return shot_parts(data)[-1]
        if isinstance(data.get("request"), Mapping):  # this format, or the old CLI's
            request = GenerationRequest.from_dict({**data["request"], "image_path": None,
                                                   "last_image_path": None})
            return cls(
                request=request,
                user_prompt=str(data.get("user_prompt") or request.prompt),
                controls=CinematicControls.from_dict(data.get("controls")),
                start_image=data.get("start_image"), end_image=data.get("end_image"),
                weights=data.get("weights") or _old_weights(data.get("weights_source")),
                studio_version=str(data.get("studio_version") or "0.1.0"),
                profile=data.get("profile"), preset=data.get("preset"),
                loras=tuple(dict(lora) for lora in data.get("loras") or ()))
        # the studio's old flat shape: the request itself, with the form's extras under "studio"
        extras = data.get("studio") if isinstance(data.get("studio"), Mapping) else {}
        request = GenerationRequest.from_dict({**data, "image_path": None, "last_image_path": None})
        return cls(request=request, user_prompt=str(extras.get("user_prompt") or request.prompt),
                   controls=CinematicControls.from_dict(extras.get("controls")),
                   studio_version="0.1.0")

    def ran_with(self, weights: str | None = None, profile: str | None = None,
                 loras: tuple[Mapping[str, Any], ...] | None = None) -> "Recipe":
        """The recipe completed with what the run knows."""
        return replace(self, weights=weights if weights is not None else self.weights,
                       profile=profile if profile is not None else self.profile,
                       loras=self.loras if loras is None else loras,
                       studio_version=STUDIO_VERSION)


def shot_settings(recipes: Sequence[Recipe | Mapping[str, Any]]) -> dict[str, Any]:
    """The settings an assembled shot's MP4 embeds: every part's recipe dict, parent first.

    A recipe may be a Recipe, its dict, or a shot's settings (an earlier assembly, extended
    again): a shot counts as its parts.
    """
    parts = [part.to_dict() for recipe in recipes
             for part in ([recipe] if isinstance(recipe, Recipe) else shot_parts(recipe))]
    if not 1 <= len(parts) <= MAX_PARTS:
        raise ShotError(f"A shot joins 1 to {MAX_PARTS} parts, got {len(parts)}.")
    return {"format": SHOT_FORMAT, "version": SHOT_VERSION, "parts": parts}


def is_shot(settings: Any) -> bool:
    """Whether stored or embedded settings describe an assembled shot rather than one take."""
    return isinstance(settings, Mapping) and settings.get("format") == SHOT_FORMAT


def shot_parts(settings: Mapping[str, Any]) -> list[Recipe]:
    """Every part's Recipe of a shot's settings, parent first; a single take's settings give one."""
    if not is_shot(settings):
        return [Recipe.from_dict(settings)]
    if settings.get("version") != SHOT_VERSION:
        raise ShotError(f"This shot has format version {settings.get('version')!r}; this studio "
                        f"reads version {SHOT_VERSION}.")
    parts = settings.get("parts")
    if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS \
            or not all(isinstance(part, Mapping) and not is_shot(part) for part in parts):
        raise ShotError(f"A shot's settings must list 1 to {MAX_PARTS} part recipes.")
    return [Recipe.from_dict(part) for part in parts]


# Compare: request fields in the order a person reads a recipe, with their labels. Preview settings
# are left out on purpose: they change what is shown while a take runs, never the video.
_REQUEST_LABELS: tuple[tuple[str, str], ...] = (
    ("variant", "Variant"), ("prompt", "Prompt (final)"), ("negative_prompt", "Negative prompt"),
    ("width", "Width"), ("height", "Height"), ("frames", "Frames"), ("fps", "Frames per second"),
    ("steps", "Steps"), ("seed", "Seed"), ("guidance", "Guidance"),
    ("guidance_low", "Guidance (low-noise)"), ("flow_shift", "Flow shift"),
    ("image_fit", "Image fit"),
)
_SPEED_LABELS: tuple[tuple[str, str], ...] = (
    ("cache", "Step cache"), ("cache_threshold", "Cache threshold"),
    ("cache_interval", "Cache interval"), ("mag_ratios_high", "MagCache ratios (high-noise)"),
    ("mag_ratios_low", "MagCache ratios (low-noise)"), ("compile", "Compiled"),
    ("attention", "Attention"),
)


def recipe_differences(a: Recipe, b: Recipe) -> list[tuple[str, str, str]]:
    """Which fields of two recipes differ, as (label, value in a, value in b), in reading order:
    the user's prompt, controls, request fields, speed, images, LoRAs, preset, weights, profile."""
    rows: list[tuple[str, Any, Any]] = [("Prompt", a.user_prompt, b.user_prompt)]
    controls_a, controls_b = a.controls.to_dict(), b.controls.to_dict()
    rows += [(_control_label(name), controls_a[name], controls_b[name]) for name in controls_a]
    rows += [(label, getattr(a.request, name), getattr(b.request, name))
             for name, label in _REQUEST_LABELS]
    rows += [(label, getattr(a.request.speed, name), getattr(b.request.speed, name))
             for name, label in _SPEED_LABELS]
    rows += [("Start image", _short_hash(a.start_image), _short_hash(b.start_image)),
             ("End image", _short_hash(a.end_image), _short_hash(b.end_image)),
             ("LoRAs", _lora_choices(a), _lora_choices(b)),
             ("LoRA files", _lora_files(a), _lora_files(b)),
             ("Preset", a.preset, b.preset), ("Weights", a.weights, b.weights),
             ("Memory profile", a.profile, b.profile),
             ("Studio version", a.studio_version, b.studio_version)]
    differing = [(label, x, y) for label, x, y in rows if x != y]
    if {label for label, _, _ in differing} & ({"Prompt"} | _CONTROL_LABELS):
        # the final prompt is the user's text plus the controls, listed already: not twice
        differing = [row for row in differing if row[0] != "Prompt (final)"]
    return [(label, _shown(x), _shown(y)) for label, x, y in differing]


def _control_label(name: str) -> str:
    return name.replace("_", " ").capitalize()  # "light_source" -> "Light source"


_CONTROL_LABELS = frozenset(_control_label(name) for name in CinematicControls().to_dict())


def _shown(value: Any) -> str:
    """A recipe value as a person reads it: none for unset, numbers without trailing zeros."""
    if value is None or value == () or value == "":
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(_shown(item) for item in value)
    return str(value)


def _short_hash(sha256: str | None) -> str | None:
    return sha256[:12] if sha256 else None  # enough to tell two images apart on screen


def _lora_choices(recipe: Recipe) -> tuple[str, ...]:
    return tuple(f"{lora.source} (high {lora.high:g}, low {lora.low:g})"
                 for lora in recipe.request.loras)


def _lora_files(recipe: Recipe) -> tuple[str, ...]:
    """The LoRA files the run applied (the preset's too), by name and content hash."""
    return tuple(f"{lora.get('name')} {str(lora.get('sha256') or '')[:12]}".strip()
                 for lora in recipe.loras)


def weights_label(source: str, demo: bool = False) -> str:
    """How a recipe names its weights: a Hub id as it is, the bundled demo weights as "demo",
    and a local folder by its name alone (its path is the server's business)."""
    if demo:
        return "demo"
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith((".", "~")) or path.exists():
        return f"local folder {path.name}"
    return source


def lora_name(source: str) -> str:
    """How a recipe names a LoRA: a Hub id or a file name of the LoRA folder as given, a path by
    its file name (a remix finds it again in the studio's LoRA folder)."""
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith((".", "~")) or "\\" in source or path.exists():
        return path.name
    return source


def _old_weights(source: Any) -> str | None:
    return weights_label(str(source)) if source else None


def file_sha256(path: str | Path) -> str:
    """The content hash a recipe names a file by."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
