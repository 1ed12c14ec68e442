"""Request validation: defaults, snapping with notices, and what each bad input gets."""

from __future__ import annotations

import math
import random

import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.request import (DEFAULT_NEGATIVE_PROMPT, GenerationRequest, VariantDefaults,
                               build_request, snap_frames, snap_to_multiple)
from pipelines.variants import VARIANTS, get_variant


def ok(**raw):
    raw.setdefault("variant", "t2v-a14b")
    raw.setdefault("prompt", "a red ball rolls across a meadow")
    return build_request(raw, rng=random.Random(0))


def refused(field: str, **raw) -> str:
    with pytest.raises(RequestError) as info:
        ok(**raw)
    assert info.value.field == field, str(info.value)
    return str(info.value)


def test_official_defaults_per_variant():
    t2v = ok().request
    assert (t2v.width, t2v.height, t2v.frames, t2v.fps, t2v.steps) == (1280, 720, 81, 16, 40)
    assert (t2v.guidance, t2v.guidance_low, t2v.flow_shift) == (4.0, 3.0, 12.0)
    assert t2v.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    ti2v = ok(variant="ti2v-5b").request
    assert (ti2v.width, ti2v.height, ti2v.frames, ti2v.fps, ti2v.steps) == (1280, 704, 121, 24, 50)
    assert (ti2v.guidance, ti2v.guidance_low, ti2v.flow_shift) == (5.0, None, 5.0)


def test_variant_registry_matches_reference_sheet():
    assert VARIANTS["t2v-a14b"].boundary_ratio == 0.875
    assert VARIANTS["i2v-a14b"].boundary_ratio == 0.900
    assert VARIANTS["ti2v-5b"].boundary_ratio is None and VARIANTS["ti2v-5b"].expand_timesteps
    assert VARIANTS["i2v-a14b"].transformer_in_channels == 36
    assert (VARIANTS["i2v-a14b"].flow_shift, VARIANTS["i2v-a14b"].guidance_low) == (5.0, 3.5)
    assert VARIANTS["ti2v-5b"].size_multiple == 32 and VARIANTS["t2v-a14b"].size_multiple == 16
    assert get_variant("i2v-a14b").boundary_timestep == pytest.approx(900)


def test_snapping_says_what_changed():
    validated = ok(width=1000, height=500, frames=80)
    assert (validated.request.width, validated.request.height, validated.request.frames) == (1008, 496, 81)
    assert any("1000x500 snapped to 1008x496" in n for n in validated.notices)
    assert any("Frames 80 snapped to 81" in n for n in validated.notices)
    ti2v = ok(variant="ti2v-5b", width=700, height=400, frames=121)
    assert (ti2v.request.width, ti2v.request.height) == (704, 416)
    assert ok(width=832, height=480, frames=81).notices == ()


def test_snap_helpers():
    assert [snap_frames(n) for n in (5, 6, 7, 8, 9, 81, 240)] == [5, 5, 9, 9, 9, 81, 241]
    assert snap_to_multiple(8, 16) == 16 and snap_to_multiple(1279, 32) == 1280


def test_frames_at_the_top_of_the_range_stay_inside_it():
    assert ok(frames=240).request.frames == 241
    assert ok(frames=241).request.frames == 241


def test_loose_strings_are_coerced_and_empty_means_default():
    request = ok(width="832", height="480", steps="30", seed="42", guidance="5.5", frames="").request
    assert (request.width, request.height, request.steps, request.seed, request.guidance,
            request.frames) == (832, 480, 30, 42, 5.5, 81)


def test_seed_is_drawn_when_absent_and_kept_when_given():
    assert 0 <= ok().request.seed <= 2**32 - 1
    assert ok(seed=-1).request.seed != -1
    assert ok(seed=2**32 - 1).request.seed == 2**32 - 1


@pytest.mark.parametrize("field,value,words", [
    ("width", 32, "between 64 and 1280"),
    ("width", 1281, "between 64 and 1280"),
    ("height", 5000, "between 64 and 1280"),
    ("frames", 4, "between 5 and 241"),
    ("frames", 242, "between 5 and 241"),
    ("steps", 0, "between 1 and 100"),
    ("steps", 101, "between 1 and 100"),
    ("guidance", -0.5, "between 0 and 20"),
    ("guidance", 21, "between 0 and 20"),
    ("guidance", math.nan, "finite"),
    ("guidance", math.inf, "finite"),
    ("guidance_low", 25, "between 0 and 20"),
    ("seed", 2**32, "between 0 and 4294967295"),
    ("seed", -5, "between 0"),
    ("steps", 2.5, "whole number"),
    ("width", "wide", "must be a number"),
    ("steps", True, "must be a number"),
    ("flow_shift", 0, "above 0"),
    ("fps", 0, "between 1 and 60"),
])
def test_out_of_bounds_values_are_refused_with_the_field(field, value, words):
    assert words in refused(field, **{field: value})


def test_ti2v_size_limit_is_its_own_largest_side():
    assert "between 64 and 1280" in refused("width", variant="ti2v-5b", width=1300)


def test_prompt_and_variant_problems():
    assert "Write a prompt" in refused("prompt", prompt="   ")
    assert "Unknown variant" in refused("variant", variant="wan-9000")
    assert "Choose a variant" in refused("variant", variant="")


def test_image_rules_per_variant(tmp_path):
    image = tmp_path / "start.png"
    Image.new("RGB", (96, 64), "red").save(image)
    assert "text only" in refused("image_path", image_path=str(image))
    assert "needs a start image" in refused("image_path", variant="i2v-a14b")
    i2v = ok(variant="i2v-a14b", prompt="", image_path=str(image)).request
    assert i2v.image_path == str(image) and i2v.prompt == ""
    assert ok(variant="ti2v-5b", image_path=str(image)).request.image_path == str(image)


def test_low_noise_guidance_ignored_with_notice_for_single_model():
    validated = ok(variant="ti2v-5b", guidance_low=2.0)
    assert validated.request.guidance_low is None
    assert any("low-noise guidance was ignored" in n for n in validated.notices)


def test_weights_folder_defaults_replace_official_ones():
    demo = VariantDefaults.official(get_variant("t2v-a14b")).updated(
        {"width": 64, "height": 64, "frames": 17, "steps": 20, "unknown": 1})
    request = build_request({"variant": "t2v-a14b", "prompt": "x"}, demo).request
    assert (request.width, request.height, request.frames, request.steps) == (64, 64, 17, 20)


def test_request_round_trips_through_json():
    request = ok(width=832, height=480, seed=7).request
    again = GenerationRequest.from_dict({**request.to_dict(), "future_field": 1})
    assert again == request
    assert "色调艳丽" in request.to_json()
