"""Cinematic controls -> final prompt text, with the Wan2.2 prompt guide's own vocabulary.

The composed prompt is always: the user's text, then one sentence listing the chosen terms in a
fixed order, then the style. Text-to-video order (the guide's formula: subject + scene + motion,
then aesthetic controls, then style):

    light source, light quality, time of day, shot size, shot type, camera angle, lens,
    composition, color tone, camera movement; then "<style> style", then effects.

Image-to-video (the image already shows the look, so motion and camera come first):

    camera movement, camera angle, shot size, shot type, lens; then light source, light quality,
    time of day, composition, color tone; then "<style> style", then effects.

Picking nothing adds nothing: the final prompt is then exactly the user's text, stripped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

LIGHT_SOURCES = ("daylight", "artificial light", "moonlight", "practical light", "firelight",
                 "fluorescent light", "overcast light", "sunny light", "mixed light")
LIGHT_QUALITIES = ("soft light", "hard light", "top light", "side light", "backlight", "underlight",
                   "rim (edge) light", "silhouette", "low contrast", "high contrast")
TIMES_OF_DAY = ("daytime", "night", "dusk", "sunset", "dawn", "sunrise")
SHOT_SIZES = ("extreme close-up", "close-up", "medium close-up", "medium shot", "medium wide shot",
              "wide shot", "extreme wide shot", "establishing shot")
COMPOSITIONS = ("center composition", "balanced composition", "left-heavy composition",
                "right-heavy composition", "symmetrical composition", "short-side composition")
LENSES = ("medium lens", "wide-angle lens", "long-focus lens", "telephoto lens", "ultra-wide fisheye")
CAMERA_ANGLES = ("eye level", "over-the-shoulder", "high angle", "low angle", "dutch angle",
                 "aerial", "top-down (overhead)")
SHOT_TYPES = ("clean single", "two shot", "three shot", "group shot", "establishing shot")
COLOR_TONES = ("warm colors", "cool colors", "mixed colors", "high saturation", "low saturation")
CAMERA_MOVEMENTS = ("static (fixed) camera", "push in", "pull back", "pan left", "pan right",
                    "tilt up", "tilt down", "tracking shot", "arc (orbit) shot", "handheld", "crane",
                    "drone fly-through", "compound move")
STYLES = ("3D cartoon", "claymation", "pixel art", "watercolor", "oil painting", "2D anime",
          "black-and-white")
EFFECTS = ("tilt-shift", "time-lapse")


@dataclass(frozen=True)
class CinematicControls:
    """The aesthetic choices of one shot; None (or empty) means "not chosen"."""

    light_source: str | None = None
    light_quality: str | None = None
    time_of_day: str | None = None
    shot_size: str | None = None
    shot_type: str | None = None
    camera_angle: str | None = None
    lens: str | None = None
    composition: str | None = None
    color_tone: str | None = None
    camera_movement: str | None = None
    style: str | None = None
    effect: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """Every control, chosen or not."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "CinematicControls":
        """Build from a dict, validating each value; unknown keys are ignored, empty means None."""
        names = {f.name for f in fields(cls)}
        values = {k: (str(v).strip() or None) if v is not None else None
                  for k, v in (data or {}).items() if k in names}
        controls = cls(**values)
        controls.validate()
        return controls

    def validate(self) -> None:
        """Raise ValueError naming the control whose value is not in the guide's vocabulary."""
        for name, value in asdict(self).items():
            if value is not None and value not in VOCABULARY[name]:
                raise ValueError(f"{value!r} is not a {name.replace('_', ' ')}; choose one of: "
                                 f"{', '.join(VOCABULARY[name])}.")


VOCABULARY: dict[str, tuple[str, ...]] = {
    "light_source": LIGHT_SOURCES,
    "light_quality": LIGHT_QUALITIES,
    "time_of_day": TIMES_OF_DAY,
    "shot_size": SHOT_SIZES,
    "shot_type": SHOT_TYPES,
    "camera_angle": CAMERA_ANGLES,
    "lens": LENSES,
    "composition": COMPOSITIONS,
    "color_tone": COLOR_TONES,
    "camera_movement": CAMERA_MOVEMENTS,
    "style": STYLES,
    "effect": EFFECTS,
}

TEXT_ORDER = ("light_source", "light_quality", "time_of_day", "shot_size", "shot_type",
              "camera_angle", "lens", "composition", "color_tone", "camera_movement")
IMAGE_ORDER = ("camera_movement", "camera_angle", "shot_size", "shot_type", "lens",
               "light_source", "light_quality", "time_of_day", "composition", "color_tone")

_END_PUNCTUATION = (".", "!", "?", "。", "！", "？")


def _sentence(text: str) -> str:
    return text if text.endswith(_END_PUNCTUATION) else f"{text}."


def compose_prompt(prompt: str, controls: CinematicControls, image_mode: bool = False) -> str:
    """The final prompt: the user's text, then the chosen terms in the documented order."""
    controls.validate()
    chosen = controls.to_dict()
    order = IMAGE_ORDER if image_mode else TEXT_ORDER
    terms = [chosen[name] for name in order if chosen[name]]
    if chosen["style"]:
        terms.append(f"{chosen['style']} style")
    if chosen["effect"]:
        terms.append(f"{chosen['effect']} effect")
    text = prompt.strip()
    if not terms:
        return text
    tail = _sentence(", ".join(terms))
    tail = tail[0].upper() + tail[1:]
    return f"{_sentence(text)} {tail}" if text else tail
