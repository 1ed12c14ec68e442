"""Captions for world clips, written by the studio's own prompt composer: the shot text (subject,
scene, motion) followed by the cinematic-control terms in the composer's order, so that what the
demo models learn is exactly what the UI sends.
"""

from __future__ import annotations

import numpy as np

from pipelines.prompting import CinematicControls, compose_prompt

from .world import ClipSpec

SCENE_TEXT = {"meadow": "in a green meadow", "desert": "in a sandy desert"}
MOTION_TEXT = {"still": "it stays still", "left": "it moves to the left",
               "right": "it moves to the right"}


def subject_text(color: str, shape: str) -> str:
    """The subject phrase, with its article: "an orange cube"."""
    return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"


def shot_text(spec: ClipSpec) -> str:
    """What a user types in the Shot box for this clip: subject, scene, motion."""
    return f"{subject_text(spec.color, spec.shape)}, {SCENE_TEXT[spec.scene]}, {MOTION_TEXT[spec.motion]}"


def controls_for(spec: ClipSpec, rng: np.random.Generator | None = None,
                 keep: float = 1.0) -> CinematicControls:
    """The studio controls a clip shows; with `rng`, each is kept with probability `keep`."""
    chosen = {"light_quality": spec.light, "time_of_day": spec.time, "shot_size": spec.shot,
              "composition": spec.composition, "camera_movement": spec.camera,
              "color_tone": None if spec.tone == "neutral" else spec.tone}
    return CinematicControls(**{name: value for name, value in chosen.items()
                                if value is not None and (rng is None or rng.random() < keep)})


def caption(spec: ClipSpec, rng: np.random.Generator | None = None, keep: float = 1.0,
            image_mode: bool = False) -> str:
    """The final prompt the studio would send for `spec` (image_mode: the image-to-video order)."""
    return compose_prompt(shot_text(spec), controls_for(spec, rng, keep), image_mode=image_mode)


def vocabulary_words() -> list[str]:
    """Every word any caption can contain, lower case and without commas, for the tokenizer."""
    from . import world

    texts = [*SCENE_TEXT.values(), *MOTION_TEXT.values(), *world.COLORS, *world.SHAPES, "a", "an",
             *world.TIMES, *world.TONES, *world.LIGHTS, *world.SHOTS, *world.COMPOSITIONS,
             *world.CAMERAS]
    words: list[str] = []
    for text in texts:
        for word in text.replace(",", " ").split():
            if word not in words:
                words.append(word)
    return words


def knowledge() -> dict[str, list[str]]:
    """What the demo models were taught, as the studio tells a person (studio.json "knows")."""
    from . import world

    return {"colours": list(world.COLORS), "shapes": list(world.SHAPES),
            "scenes": list(SCENE_TEXT.values()), "motion": list(MOTION_TEXT.values()),
            "controls": [*world.TIMES, *[t for t in world.TONES if t != "neutral"], *world.LIGHTS,
                         *world.SHOTS, *world.COMPOSITIONS, *world.CAMERAS]}
