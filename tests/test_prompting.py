"""The cinematic-controls composer: fixed order, nothing added for nothing picked, i2v order."""

from __future__ import annotations

import pytest

from pipelines.prompting import (CAMERA_MOVEMENTS, LIGHT_SOURCES, VOCABULARY, CinematicControls,
                                 compose_prompt)


def test_nothing_picked_adds_nothing() -> None:
    assert compose_prompt("  a red ball rolls across a meadow \n", CinematicControls()) == \
        "a red ball rolls across a meadow"


def test_text_mode_order_is_fixed() -> None:
    controls = CinematicControls(camera_movement="pan left", light_source="daylight",
                                 time_of_day="dusk", shot_size="wide shot", color_tone="warm colors",
                                 style="watercolor", effect="time-lapse")
    assert compose_prompt("a red ball rolls across a meadow", controls) == (
        "a red ball rolls across a meadow. Daylight, dusk, wide shot, warm colors, pan left, "
        "watercolor style, time-lapse effect."
    )


def test_image_mode_puts_camera_movement_first() -> None:
    controls = CinematicControls(light_source="moonlight", camera_movement="push in",
                                 camera_angle="low angle")
    text = compose_prompt("the cat turns its head", controls, image_mode=True)
    assert text == "the cat turns its head. Push in, low angle, moonlight."
    assert compose_prompt("the cat turns its head", controls) == \
        "the cat turns its head. Moonlight, low angle, push in."


def test_clearing_a_control_removes_its_words() -> None:
    with_light = compose_prompt("a bird flies", CinematicControls(light_source="firelight",
                                                                  lens="telephoto lens"))
    without = compose_prompt("a bird flies", CinematicControls(lens="telephoto lens"))
    assert "firelight" in with_light.lower() and "firelight" not in without.lower()
    assert without == "a bird flies. Telephoto lens."


def test_existing_end_punctuation_is_kept() -> None:
    assert compose_prompt("A dog runs!", CinematicControls(shot_size="close-up")) == \
        "A dog runs! Close-up."


def test_controls_alone_make_a_prompt() -> None:
    assert compose_prompt("", CinematicControls(camera_movement="tilt up"), image_mode=True) == "Tilt up."


def test_every_vocabulary_term_is_accepted_verbatim() -> None:
    for name, terms in VOCABULARY.items():
        for term in terms:
            text = compose_prompt("x", CinematicControls(**{name: term}))
            assert term.lower() in text.lower()


def test_official_vocabulary_is_used() -> None:
    assert "rim (edge) light" in VOCABULARY["light_quality"]
    assert "arc (orbit) shot" in CAMERA_MOVEMENTS and "drone fly-through" in CAMERA_MOVEMENTS
    assert len(LIGHT_SOURCES) == 9 and len(CAMERA_MOVEMENTS) == 13


def test_unknown_term_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="not a light source; choose one of: daylight"):
        compose_prompt("x", CinematicControls(light_source="disco light"))


def test_from_dict_treats_empty_as_unpicked_and_ignores_unknown_keys() -> None:
    controls = CinematicControls.from_dict({"lens": "", "style": None, "mood": "sad",
                                            "color_tone": "cool colors"})
    assert controls == CinematicControls(color_tone="cool colors")
    with pytest.raises(ValueError, match="camera movement"):
        CinematicControls.from_dict({"camera_movement": "zoom"})
