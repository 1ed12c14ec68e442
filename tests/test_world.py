"""The procedural world: deterministic, physically consistent camera moves, lighting that does
what the vocabulary says, and captions in the studio's phrasing."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.captions import caption, vocabulary_words
from training.measure import (background_colors, brightness, centroid_x, color_masks, dominant_color, latent_dx,
                              motion, red_minus_blue, subject_area)
from studio.forms import final_prompt
from training.world import ClipSpec, render, sample_spec, subject_mask

BASE = ClipSpec(color="red", shape="ball", scene="meadow", motion="still", time="daytime",
                tone="neutral", light="top light", shot="medium shot",
                composition="center composition", camera="static (fixed) camera", seed=7)


def with_(**changes: str) -> ClipSpec:
    return dataclasses.replace(BASE, **changes)


def test_same_seed_same_clip_and_spec() -> None:
    a = sample_spec(np.random.default_rng(3))
    assert a == sample_spec(np.random.default_rng(3))
    assert np.array_equal(render(a), render(a))
    assert sample_spec(np.random.default_rng(4)) != a


def test_render_shape_and_range() -> None:
    clip = render(BASE, frames=9, height=32, width=48)
    assert clip.shape == (9, 32, 48, 3) and clip.dtype == np.float32
    assert 0.0 <= clip.min() and clip.max() <= 1.0


@pytest.mark.parametrize("frames,height,width", [(0, 64, 64), (17, 4, 64), (17, 64, 2)])
def test_render_refuses_empty_sizes(frames: int, height: int, width: int) -> None:
    with pytest.raises(ValueError, match="at least 1 frame"):
        render(BASE, frames, height, width)


def test_unknown_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="camera must be one of"):
        with_(camera="dolly zoom")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pan_left_moves_content_right(seed: int) -> None:
    _, left = motion(render(with_(camera="pan left", seed=seed)))
    _, right = motion(render(with_(camera="pan right", seed=seed)))
    assert left > 0.5 and right < -0.5


def _pooled(clip: np.ndarray) -> np.ndarray:
    """A stand-in latent (C, F, H, W): every 4th frame, 8x8 average pooled, as the Wan VAE's grid."""
    frames = clip[::4]
    f, h, w, c = frames.shape
    return frames.reshape(f, h // 8, 8, w // 8, 8, c).mean(axis=(2, 4)).transpose(3, 0, 1, 2)


def test_latent_dx_reads_the_pan_on_the_latent_grid() -> None:
    # latent frames 1 and 3 are 8 pixel frames apart, and the world pans 1.34 pixels a frame
    left = latent_dx(_pooled(render(with_(camera="pan left"))))
    right = latent_dx(_pooled(render(with_(camera="pan right"))))
    still = latent_dx(_pooled(render(with_(camera="static (fixed) camera"))))
    assert 1.0 < left < 1.7 and -1.7 < right < -1.0 and abs(still) < 0.1
    with pytest.raises(ValueError, match="too narrow"):
        latent_dx(np.zeros((16, 5, 4, 4), np.float32))


def test_tilt_up_moves_content_down() -> None:
    up, _ = motion(render(with_(camera="tilt up")))
    down, _ = motion(render(with_(camera="tilt down")))
    assert up > 0.4 and down < -0.4


def test_push_in_grows_the_subject_and_pull_back_shrinks_it() -> None:
    grow = subject_area(subject_mask(with_(camera="push in")))
    shrink = subject_area(subject_mask(with_(camera="pull back")))
    assert grow[-1] > 1.5 * grow[0]
    assert shrink[-1] < 0.7 * shrink[0]


def test_static_camera_keeps_the_background_still() -> None:
    dy, dx = motion(render(with_(camera="static (fixed) camera")))
    assert abs(dx) < 0.1 and abs(dy) < 0.1


def test_subject_motion_moves_the_subject_in_the_world() -> None:
    right = subject_mask(with_(motion="right"))
    assert centroid_x(right[-1:]) > centroid_x(right[:1]) + 0.1


def test_warm_tone_raises_red_minus_blue() -> None:
    warm, cool = render(with_(tone="warm colors")), render(with_(tone="cool colors"))
    assert red_minus_blue(warm) > red_minus_blue(render(BASE)) > red_minus_blue(cool)


def test_time_of_day_sets_brightness() -> None:
    day, dusk, night = (brightness(render(with_(time=t))) for t in ("daytime", "dusk", "night"))
    assert day > dusk > night


def test_hard_light_has_more_contrast_than_soft() -> None:
    assert render(with_(light="hard light")).std() > render(with_(light="soft light")).std()


def test_side_light_is_a_left_to_right_gradient() -> None:
    clip = render(with_(light="side light"))
    assert brightness(clip[:, :, :20]) > 1.3 * brightness(clip[:, :, -20:])


def test_shot_size_sets_subject_area() -> None:
    areas = [subject_area(subject_mask(with_(shot=s))).mean()
             for s in ("close-up", "medium shot", "wide shot")]
    assert areas[0] > areas[1] > areas[2]


def test_composition_sets_subject_position() -> None:
    left = centroid_x(subject_mask(with_(composition="left-heavy composition")))
    right = centroid_x(subject_mask(with_(composition="right-heavy composition")))
    assert left < 0.4 < 0.6 < right


@pytest.mark.parametrize("color", ["red", "orange", "yellow", "green", "blue", "purple"])
def test_named_colour_is_the_dominant_subject_colour(color: str) -> None:
    assert dominant_color(render(with_(color=color, shot="close-up"))) == color


@pytest.mark.parametrize("color, shade", [("blue", (0.20, 0.26, 0.90)), ("purple", (0.50, 0.30, 0.90))])
def test_a_subject_a_shade_off_its_hue_is_told_from_the_clips_own_sky(color: str, shade: tuple) -> None:
    # a generated daytime clip's blue or purple subject comes out a shade off the world's hue; against
    # every time of day's sky it is nearer the night or dusk sky's top colour and vanishes, against
    # the clip's own sky, ground and trees it is found
    clip = render(with_(color=color, shot="close-up"))
    mask = subject_mask(with_(color=color, shot="close-up"))
    clip[mask] = shade
    assert not color_masks(clip)[color][mask].any()
    found = color_masks(clip, background=background_colors("daytime", "meadow"))[color]
    assert found[mask].mean() > 0.95 and not found[~mask].any()
    assert dominant_color(clip, background=background_colors("daytime", "meadow")) == color


def test_caption_is_what_the_studio_composer_sends() -> None:
    spec = with_(color="orange", camera="pan left", tone="warm colors", light="soft light")
    assert caption(spec) == ("an orange ball, in a green meadow, it stays still. Soft light, daytime, "
                             "medium shot, center composition, warm colors, pan left.")
    assert caption(spec, image_mode=True) == (
        "an orange ball, in a green meadow, it stays still. Pan left, medium shot, soft light, "
        "daytime, center composition, warm colors.")
    form = {"variant": "t2v-a14b", "prompt": "an orange ball, in a green meadow, it stays still",
            "light_quality": "soft light", "time_of_day": "daytime", "shot_size": "medium shot",
            "composition": "center composition", "color_tone": "warm colors",
            "camera_movement": "pan left"}
    assert final_prompt(form) == caption(spec)


def test_every_caption_word_is_a_tokenizer_piece() -> None:
    words = set(vocabulary_words())
    rng = np.random.default_rng(0)
    for _ in range(50):
        text = caption(sample_spec(rng), rng, keep=0.5, image_mode=bool(rng.random() < 0.5))
        assert {w.lower() for w in text.replace(",", " ").replace(".", " ").split()} <= words


def test_caption_dropout_keeps_subject_scene_and_motion() -> None:
    rng = np.random.default_rng(0)
    text = caption(with_(), rng=rng, keep=0.0)
    assert text == "a red ball, in a green meadow, it stays still"


@pytest.mark.parametrize("phrase_steps", [0, 5])
def test_capitalised_words_encode_like_lower_case_ones(phrase_steps: int) -> None:
    from training.text import build_text_encoder, build_tokenizer, teach_phrases

    tokenizer = build_tokenizer()
    encoder = build_text_encoder(tokenizer)
    teach_phrases(encoder, tokenizer, phrase_steps, batch=8)
    texts = ("a ball. Pan left.", "a ball. pan left.")
    ids = [tokenizer(text, return_tensors="pt").input_ids for text in texts]
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(ids[0][0])
    with torch.no_grad():
        a, b = (encoder(i).last_hidden_state for i in ids)
    assert torch.equal(a, b)


def test_every_caption_token_is_labelled_with_its_phrase() -> None:
    from training.text import build_tokenizer, phrase_batch, phrases

    tokenizer = build_tokenizer()
    text = caption(with_(camera="pan left", motion="left"))
    ids, mask, labels = phrase_batch(tokenizer, [text, "a red ball"])
    names = phrases()
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    by_token = [(tok, names[lab] if lab >= 0 else None) for tok, lab in zip(tokens, labels[0].tolist())]
    lefts = [phrase for tok, phrase in by_token if tok == "\u2581left"]
    assert lefts == ["it moves to the left", "pan left"]
    assert by_token[-1] == ("</s>", None) and mask[1].sum() < mask[0].sum()
    assert (labels[1][mask[1].sum():] == -100).all()


def test_phrase_teaching_tells_the_cameras_left_from_the_subjects() -> None:
    from training.text import build_text_encoder, build_tokenizer, teach_phrases

    tokenizer = build_tokenizer()
    encoder = build_text_encoder(tokenizer)
    text = caption(with_(camera="pan left", motion="left"))
    ids = tokenizer(text, return_tensors="pt").input_ids
    lefts = [i for i, t in enumerate(tokenizer.convert_ids_to_tokens(ids[0])) if t == "\u2581left"]

    def similarity() -> float:
        with torch.no_grad():
            out = encoder(ids).last_hidden_state[0]
        return float(torch.nn.functional.cosine_similarity(out[lefts[0]], out[lefts[1]], dim=0))

    assert similarity() > 0.99  # a random encoder is a bag of words
    accuracy = teach_phrases(encoder, tokenizer, steps=150, batch=16)  # about 0.96 and 0.58
    assert accuracy > 0.9 and similarity() < 0.8


def test_train_text_logs_its_recipe_for_the_model_cards(tmp_path: Path, monkeypatch) -> None:
    from training.train_text import main

    monkeypatch.setattr(sys, "argv", ["train_text", "--out", str(tmp_path), "--phrase-steps", "2"])
    main()
    log = (tmp_path / "train_log.txt").read_text()
    assert log.startswith("phrase_steps=2 seed=0 token_accuracy=") and log.endswith("\n")
    assert (tmp_path / "text_encoder" / "config.json").is_file()
