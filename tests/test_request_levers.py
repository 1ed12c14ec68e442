"""The request's new levers: guidance pairs, image fit, presets, LoRA choices and speed settings."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.images import fit_to_area
from pipelines.presets import PRESETS, get_preset, preset_form_values, presets_for
from pipelines.request import (GenerationRequest, LoraChoice, SpeedSettings, build_request,
                               parse_lora)


def ok(**raw):
    raw.setdefault("variant", "t2v-a14b")
    raw.setdefault("prompt", "a red ball rolls across a meadow")
    return build_request(raw, rng=random.Random(0))


def refused(field, **raw):
    with pytest.raises(RequestError) as info:
        ok(**raw)
    assert info.value.field == field, str(info.value)
    return str(info.value)


def image(tmp_path, size, name="start.png"):
    path = tmp_path / name
    Image.new("RGB", size, "red").save(path)
    return str(path)


# --- guidance ---------------------------------------------------------------------------------


def test_high_noise_guidance_of_one_with_low_noise_guidance_above_one_is_refused():
    message = refused("guidance", guidance=1.0, guidance_low=3.0)
    assert "guidance_low 3 would not apply" in message and "raise guidance above 1" in message


def test_guidance_of_one_or_less_says_the_negative_prompt_is_unused():
    validated = ok(guidance=1.0, guidance_low=1.0)
    assert any("negative prompt is not used" in n for n in validated.notices)
    assert not any("negative prompt" in n for n in ok().notices)
    single = ok(variant="ti2v-5b", guidance=0.5)
    assert any("negative prompt is not used" in n for n in single.notices)


def test_high_guidance_with_low_noise_guidance_of_one_is_allowed():
    assert ok(guidance=4.0, guidance_low=1.0).request.guidance_low == 1.0


# --- image fit --------------------------------------------------------------------------------


def test_image_keeps_its_aspect_at_the_requested_area(tmp_path):
    wide = image(tmp_path, (1920, 1080))  # 16:9 asked as 832x480 (about 16:9.2)
    validated = ok(variant="i2v-a14b", image_path=wide, width=832, height=480)
    request = validated.request
    # the official formula: sqrt(area / aspect) = 842.6 and sqrt(area * aspect) = 473.9, floored to 16
    assert (request.width, request.height) == (832, 464)
    assert any("Size 832x464 used" in n and "1920x1080" in n for n in validated.notices)


def test_portrait_image_on_a_landscape_request_turns_the_video_portrait(tmp_path):
    tall = image(tmp_path, (720, 1280))
    request = ok(variant="i2v-a14b", image_path=tall, width=1280, height=720).request
    assert (request.width, request.height) == (720, 1280)


def test_crop_keeps_the_requested_box(tmp_path):
    wide = image(tmp_path, (1920, 1080))
    validated = ok(variant="i2v-a14b", image_path=wide, width=832, height=480, image_fit="crop")
    assert (validated.request.width, validated.request.height) == (832, 480)
    assert validated.request.image_fit == "crop" and not any("used" in n for n in validated.notices)
    assert "image_fit must be one of fit, crop" in refused("image_fit", variant="i2v-a14b",
                                                           image_path=wide, image_fit="stretch")


def test_ti2v_image_mode_snaps_to_its_grid_of_32(tmp_path):
    square = image(tmp_path, (1000, 1000))
    request = ok(variant="ti2v-5b", image_path=square, width=1280, height=704).request
    assert (request.width, request.height) == (928, 928)


def test_same_aspect_keeps_the_request(tmp_path):
    same = image(tmp_path, (96, 64))
    validated = ok(variant="i2v-a14b", image_path=same, width=96, height=64)
    assert (validated.request.width, validated.request.height) == (96, 64)
    assert validated.notices == ()


def test_fit_to_area_keeps_extreme_images_within_the_limits():
    assert fit_to_area((4000, 500), (1280, 720), 16, 64, 1280) == (1280, 160)
    assert fit_to_area((100, 8000), (832, 480), 16, 64, 1280) == (64, 1280)


# --- presets ----------------------------------------------------------------------------------


def test_preset_sets_steps_guidance_and_shift():
    validated = ok(preset="t2v-lightning-4step")
    request = validated.request
    assert (request.steps, request.guidance, request.guidance_low, request.flow_shift) == (4, 1.0, 1.0, 5.0)
    assert request.preset == "t2v-lightning-4step"
    assert any("Preset T2V Lightning" in n for n in validated.notices)
    assert ok(preset="t2v-lightning-4step", steps=6).request.steps == 6  # the user's value wins


def test_preset_for_another_variant_or_unknown_is_refused():
    assert "made for i2v-a14b, not t2v-a14b" in refused("preset", preset="i2v-lightning-4step")
    assert "Unknown preset" in refused("preset", preset="turbo")


def test_preset_form_values_are_what_the_request_gets(tmp_path):
    start = image(tmp_path, (64, 64))
    for preset in PRESETS.values():
        raw = {"variant": preset.variant, "prompt": "x", "width": 64, "height": 64,
               "image_path": start if preset.variant == "i2v-a14b" else None,
               **preset_form_values(preset.id)}
        request = build_request(raw, rng=random.Random(0)).request
        assert (request.steps, request.guidance, request.guidance_low, request.flow_shift,
                request.preset) == (preset.steps, preset.guidance, preset.guidance_low,
                                    preset.flow_shift, preset.id)
    assert [p.id for p in presets_for("ti2v-5b")] == ["ti2v-distill-4step"]
    pair = get_preset("t2v-lightning-4step").files()
    assert [(high, low) for _, high, low in pair] == [(1.0, 0.0), (0.0, 1.0)]
    assert get_preset("t2v-lightning-4step-motion").high_strength > get_preset(
        "t2v-lightning-4step-motion").low_strength


# --- LoRA choices -----------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("style.safetensors", LoraChoice("style.safetensors")),
    ("style.safetensors:0.5", LoraChoice("style.safetensors", 0.5, 0.5)),
    ("style:high=1.5,low=0", LoraChoice("style", 1.5, 0.0)),
    ("owner/repo:low=0.7", LoraChoice("owner/repo", 1.0, 0.7)),
    ("owner/repo/dir/file.safetensors", LoraChoice("owner/repo/dir/file.safetensors")),
    ("C:\\loras\\x.safetensors", LoraChoice("C:\\loras\\x.safetensors")),
])
def test_lora_text_is_parsed(text, expected):
    assert parse_lora(text) == expected


def test_lora_choices_are_validated():
    request = ok(loras=["a.safetensors:high=1,low=0", {"source": "b", "high": 0, "low": 0.8}]).request
    assert request.loras == (LoraChoice("a.safetensors", 1.0, 0.0), LoraChoice("b", 0.0, 0.8))
    assert "between -4 and 4" in refused("loras.high", loras=[LoraChoice("a", 9.0, 1.0)])
    assert "unknown strength" in refused("loras", loras=["a:mid=1"])
    assert "At most 8 LoRAs" in refused("loras", loras=[f"l{i}" for i in range(9)])
    dropped = ok(loras=["a:0"])
    assert dropped.request.loras == () and any("left out" in n for n in dropped.notices)


# --- speed ------------------------------------------------------------------------------------


def test_speed_settings_are_validated():
    speed = ok(speed={"cache": "first-block", "cache_threshold": 0.1, "compile": True,
                      "attention": "flash"}).request.speed
    assert speed == SpeedSettings(cache="first-block", cache_threshold=0.1, compile=True,
                                  attention="flash")
    assert "speed.cache must be one of" in refused("speed.cache", speed={"cache": "fastercache"})
    assert "calibrated" in refused("speed.cache", speed={"cache": "magcache",
                                                         "mag_ratios_high": [1.0] * 4})
    assert "speed.attention must be one of" in refused("speed.attention", speed={"attention": "xla"})
    assert ok().request.speed.is_default


def test_request_with_every_lever_round_trips_through_json(tmp_path):
    request = ok(variant="i2v-a14b", image_path=image(tmp_path, (96, 64)), width=96, height=64,
                 loras=["a:high=1,low=0"], preset="i2v-lightning-4step", image_fit="crop",
                 speed={"cache": "magcache", "mag_ratios_high": [1.0, 0.9],
                        "mag_ratios_low": [1.0, 0.95]}).request
    import json

    again = GenerationRequest.from_dict(json.loads(request.to_json()))
    assert again == request and again.speed.mag_ratios_low == (1.0, 0.95)
    old = {k: v for k, v in request.to_dict().items() if k not in ("loras", "speed", "preset",
                                                                   "image_fit")}
    assert GenerationRequest.from_dict(old).speed == SpeedSettings()  # requests stored before
