"""Variations and Compare (issue 27, items 3 and 4): the seeds of a batch, and which fields of two
recipes differ, with labels a person reads."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pipelines.errors import RequestError
from pipelines.prompting import CinematicControls, compose_prompt
from pipelines.recipe import Recipe, recipe_differences
from pipelines.request import MAX_SEED, LoraChoice, SpeedSettings, build_request, variation_seeds


def test_variation_seeds_are_consecutive() -> None:
    assert variation_seeds(41, 4) == [41, 42, 43, 44]
    assert variation_seeds("7", "2") == [7, 8]  # loose form values
    assert len(variation_seeds(0, 8)) == 8


def test_variation_seeds_wrap_within_the_seed_range() -> None:
    assert variation_seeds(MAX_SEED - 1, 4) == [MAX_SEED - 1, MAX_SEED, 0, 1]


@pytest.mark.parametrize("seed, count, field, words", [
    (1, 1, "variations", "between 2 and 8, got 1"),
    (1, 9, "variations", "between 2 and 8, got 9"),
    (1, 2.5, "variations", "whole number"),
    (1, "many", "variations", "must be a number"),
    (-1, 4, "seed", "between 0 and"),
    (MAX_SEED + 1, 4, "seed", "between 0 and"),
])
def test_bad_variation_counts_and_seeds_are_refused(seed, count, field: str, words: str) -> None:
    with pytest.raises(RequestError) as info:
        variation_seeds(seed, count)
    assert info.value.field == field and words in str(info.value)


@pytest.fixture(autouse=True)
def start_png(tmp_path, monkeypatch) -> None:
    """i2v requests need a start image on disk (the recipe keeps only its hash)."""
    from PIL import Image

    Image.new("RGB", (832, 480), "red").save(tmp_path / "start.png")
    monkeypatch.setitem(IMAGE, "path", str(tmp_path / "start.png"))


IMAGE: dict[str, str] = {}


def recipe(**raw) -> Recipe:
    user = raw.pop("user_prompt", "a red ball rolls")
    controls = raw.pop("controls", CinematicControls())
    extras = {k: raw.pop(k) for k in ("start_image", "end_image", "weights", "profile", "loras_run")
              if k in raw}
    raw = {"variant": "t2v-a14b", "prompt": compose_prompt(user, controls), "width": 832,
           "height": 480, "seed": 1, **raw}
    if raw["variant"] == "i2v-a14b":
        raw["image_path"] = IMAGE["path"]
    request = build_request(raw, rng=random.Random(0)).request
    made = Recipe(request, user, controls, start_image=extras.get("start_image"),
                  end_image=extras.get("end_image"), weights=extras.get("weights", "demo"),
                  profile=extras.get("profile"), loras=extras.get("loras_run", ()))
    return made


def test_equal_recipes_have_no_differences() -> None:
    assert recipe_differences(recipe(), recipe()) == []
    # preview settings never change the video, so Compare does not list them
    assert recipe_differences(recipe(), recipe(preview={"enabled": False, "max_side": 128})) == []


def test_differences_are_labelled_and_in_reading_order() -> None:
    a = recipe(seed=1, steps=40, guidance=4.0)
    b = recipe(seed=2, steps=30, guidance=4.5, width=480, height=832)
    assert recipe_differences(a, b) == [("Width", "832", "480"), ("Height", "480", "832"),
                                        ("Steps", "40", "30"), ("Seed", "1", "2"),
                                        ("Guidance", "4", "4.5")]


def test_the_users_prompt_and_controls_are_compared_not_the_text_made_from_them() -> None:
    warm = recipe(controls=CinematicControls(color_tone="warm colors"))
    cool = recipe(user_prompt="a red ball bounces", controls=CinematicControls(
        color_tone="cool colors", camera_movement="pan left"))
    assert recipe_differences(warm, cool) == [
        ("Prompt", "a red ball rolls", "a red ball bounces"),
        ("Color tone", "warm colors", "cool colors"),
        ("Camera movement", "none", "pan left"),
    ]
    # an old recipe (no controls recorded) still shows how its final prompt differs
    old = replace(recipe(), request=replace(recipe().request, prompt="a red ball, at dusk"))
    assert recipe_differences(recipe(), old) == [("Prompt (final)", "a red ball rolls",
                                                 "a red ball, at dusk")]


def test_images_loras_preset_weights_and_profile_are_compared() -> None:
    plain = recipe(variant="i2v-a14b", start_image="a" * 64, weights="demo")
    other = recipe(variant="i2v-a14b", start_image="b" * 64, end_image="c" * 64,
                   weights="Wan-AI/Wan2.2-I2V-A14B-Diffusers", profile="balanced",
                   loras=[LoraChoice("style.safetensors", 0.8, 0.0)],
                   loras_run=({"name": "style.safetensors", "sha256": "d" * 64, "high": 0.8,
                               "low": 0.0},))
    rows = dict((label, (x, y)) for label, x, y in recipe_differences(plain, other))
    assert rows["Start image"] == ("a" * 12, "b" * 12)
    assert rows["End image"] == ("none", "c" * 12)
    assert rows["LoRAs"] == ("none", "style.safetensors (high 0.8, low 0)")
    assert rows["LoRA files"] == ("none", "style.safetensors " + "d" * 12)
    assert rows["Weights"] == ("demo", "Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    assert rows["Memory profile"] == ("none", "balanced")
    assert "Variant" not in rows


def test_variant_preset_and_speed_differences() -> None:
    a = recipe(variant="i2v-a14b", start_image="a" * 64)
    b = recipe(variant="i2v-a14b", start_image="a" * 64, preset="i2v-lightning-4step",
               speed=SpeedSettings(cache="first-block", cache_threshold=0.1, compile=True))
    rows = dict((label, (x, y)) for label, x, y in recipe_differences(a, b))
    assert rows["Preset"] == ("none", "i2v-lightning-4step")
    assert rows["Step cache"] == ("none", "first-block") and rows["Compiled"] == ("no", "yes")
    assert rows["Cache threshold"] == ("none", "0.1")
    t2v = recipe_differences(recipe(), recipe(variant="ti2v-5b", width=1280, height=704))
    assert t2v[0] == ("Variant", "t2v-a14b", "ti2v-5b") and ("Guidance (low-noise)", "3", "none") in t2v
