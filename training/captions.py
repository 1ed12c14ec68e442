"""Captions for world clips, written the way the studio's prompt composer writes prompts:
subject, scene, motion, then the cinematic-control phrases, comma-joined.
"""

from __future__ import annotations

import numpy as np

from .world import ClipSpec

SCENE_TEXT = {"meadow": "in a green meadow", "desert": "in a sandy desert"}
MOTION_TEXT = {"still": "it stays still", "left": "it moves to the left",
               "right": "it moves to the right"}


def control_phrases(spec: ClipSpec) -> list[str]:
    """The vocabulary phrases for the cinematic controls a clip shows, in the composer's order."""
    phrases = [spec.camera, spec.shot, spec.composition, spec.light, spec.time]
    if spec.tone != "neutral":
        phrases.append(spec.tone)
    return phrases


def caption(spec: ClipSpec, rng: np.random.Generator | None = None, keep: float = 1.0) -> str:
    """The prompt describing `spec`; with `rng`, each control phrase is kept with probability `keep`."""
    article = "an" if spec.color[0] in "aeiou" else "a"
    parts = [f"{article} {spec.color} {spec.shape}", SCENE_TEXT[spec.scene], MOTION_TEXT[spec.motion]]
    for phrase in control_phrases(spec):
        if rng is None or rng.random() < keep:
            parts.append(phrase)
    return ", ".join(parts)


def vocabulary_words() -> list[str]:
    """Every word any caption can contain, for building the tokenizer."""
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
