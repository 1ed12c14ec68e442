"""Longer shots (issue 27, item 2): a take and its extensions joined into one clip, the shared
frame counted once, each child colour-matched to the running shot, every part's recipe kept."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pipelines.errors import ShotError
from pipelines.extend import (assemble, assemble_mp4, colour_transfer, fade_weights,
                              retime, seam_difference)
from pipelines.recipe import SHOT_FORMAT, Recipe, is_shot, shot_parts, shot_settings
from pipelines.request import build_request
from pipelines.video import read_frames, read_settings, write_mp4


def scene(frames: int, shift: int = 0, size: tuple[int, int] = (32, 48)) -> np.ndarray:
    """A smooth scene (waves of colour and a soft sun) panning right `shift` px a frame; float 0-255."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width + shift * frames].astype(np.float64)
    sun = 60 * np.exp(-((x - 20) ** 2 + (y - 12) ** 2) / 60)
    world = np.stack([110 + 50 * np.sin(x / 9) + sun, 40 + 90 * y / height + sun / 2,
                      110 + 40 * np.cos(x / 13 + y / 11)], axis=-1)
    return np.stack([world[:, shift * k: shift * k + width] for k in range(frames)])


def cast(frames: np.ndarray, gain=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Frames with a colour cast, as uint8."""
    return np.clip(frames * np.array(gain) + np.array(offset) + 0.5, 0, 255).astype(np.uint8)


def chain(*casts: tuple[tuple, tuple], frames: int = 9) -> tuple[np.ndarray, list[np.ndarray]]:
    """The true shot and its parts: part i shows frames [i*(n-1), i*(n-1)+n) of it, with cast i."""
    total = 1 + len(casts) * (frames - 1)
    truth = scene(total, shift=1)
    parts = [cast(truth[i * (frames - 1): i * (frames - 1) + frames], *c) for i, c in enumerate(casts)]
    return cast(truth), parts


# seam_difference ---------------------------------------------------------------------------------

def test_seam_difference_is_the_mean_per_channel_difference_of_mean_colours() -> None:
    frame = cast(scene(1))[0]
    assert seam_difference(frame, frame) == 0.0
    shifted = cast(scene(1), offset=(10, -20, 30))[0]  # no clipping at these values
    assert seam_difference(frame, shifted) == pytest.approx(20.0, abs=0.01)
    with pytest.raises(ShotError, match="height, width, 3"):
        seam_difference(frame[..., :2], frame)


# assemble ---------------------------------------------------------------------------------------

def test_the_shared_frame_is_counted_once_and_the_parent_is_untouched() -> None:
    _, parts = chain(((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (0, 0, 0)))
    shot = assemble(parts, fps=16)
    assert len(shot) == sum(len(p) for p in parts) - 2 == 25
    assert np.array_equal(shot[:9], parts[0])
    # no cast: the child stays itself, give or take what one frame of panning changes in the fit
    assert np.abs(shot[8:17].astype(int) - parts[1]).mean() < 1.5
    still = [cast(scene(5))] * 2  # and exactly itself when nothing moves
    assert np.abs(assemble(still, fps=16)[4:].astype(int) - still[1]).max() <= 1


@pytest.mark.parametrize("match", ["mean", "mean-std", "affine"])
def test_a_childs_cast_is_matched_to_the_parent(match: str) -> None:
    casting = ((1.0, 1.0, 1.0), (14, -9, 6)) if match == "mean" else ((1.12, 0.9, 1.05), (4, -3, 2))
    truth, parts = chain(((1, 1, 1), (0, 0, 0)), casting)
    shot = assemble(parts, fps=16, match=match)
    # the seam as the shot shows it: the parent's last frame, then the child's frame 1
    assert seam_difference(parts[0][-1], parts[1][1]) > 9 and seam_difference(shot[8], shot[9]) < 0.2
    # held out: the child's later frames (the map saw only its frame 1) get the truth back
    assert np.abs(parts[1][2:].astype(float) - truth[10:]).mean() > 9
    assert np.abs(shot[10:].astype(float) - truth[10:]).mean() < 1.5


def test_each_child_is_matched_to_the_running_shot() -> None:
    truth, parts = chain(((1, 1, 1), (0, 0, 0)), ((1.1, 1, 0.9), (5, 0, 0)),
                         ((1.1, 1, 0.9), (5, 0, 0)))
    # the grandchild was made from the child's cast last frame, so it carries the cast twice
    parts[2] = cast(parts[2].astype(float), (1.1, 1, 0.9), (5, 0, 0))
    shot = assemble(parts, fps=16)
    assert np.abs(shot.astype(float) - truth).mean(axis=(1, 2, 3)).max() < 3.0
    unmatched = assemble(parts, fps=16, match="none")
    assert np.abs(unmatched[-1].astype(float) - truth[-1]).mean() > 15


def test_a_fade_leaves_the_childs_own_tone_after_it() -> None:
    _, parts = chain(((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (20, 20, 20)))
    whole = assemble(parts, fps=8, match="mean")
    faded = assemble(parts, fps=8, match="mean", fade_s=0.5)  # 4 frames
    assert np.array_equal(faded[-4:], parts[1][-4:]) and not np.array_equal(whole[-1], parts[1][-1])
    for k in (1, 2, 3):  # the child's frame k keeps (1 - k/4) of the correction of -20
        assert seam_difference(faded[8 + k], parts[1][k]) == pytest.approx(20 * (1 - k / 4), abs=0.6)
    assert fade_weights(6, 4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert fade_weights(3, 0).tolist() == [1.0, 1.0, 1.0]


def test_unmatched_colours_are_left_alone_by_none() -> None:
    _, parts = chain(((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (20, 0, 0)))
    assert np.array_equal(assemble(parts, fps=16, match="none")[9:], parts[1][1:])


def test_a_child_of_another_size_is_fitted_to_the_shot() -> None:
    parent = cast(scene(5))
    child = cast(scene(5, size=(40, 60)))
    shot = assemble([parent, child], fps=16)
    assert shot.shape == (9, 32, 48, 3)


def test_an_extreme_seam_falls_back_to_an_offset() -> None:
    """Two unrelated pictures are not a cast: the affine map would blow up, offsets do not."""
    flat = np.full((1, 16, 16, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 255, (1, 16, 16, 3), np.uint8)
    for source, target in ((noise[0], flat[0]), (flat[0] // 8 + 100, noise[0])):
        transfer = colour_transfer(source, target, "affine")
        assert np.allclose(transfer[:3], np.eye(3))


@pytest.mark.parametrize("parts, message", [
    ([], "at least one part"),
    ([np.zeros((3, 8, 8, 3), np.float32)], "not uint8 frames"),
    ([np.zeros((3, 8, 8), np.uint8)], "not uint8 frames"),
    ([np.zeros((3, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8)], "at least two frames"),
])
def test_bad_parts_are_refused_with_a_sentence(parts, message: str) -> None:
    with pytest.raises(ShotError, match=message):
        assemble(parts, fps=16)
    with pytest.raises(ValueError, match="match must be one of"):
        colour_transfer(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), "magic")  # type: ignore[arg-type]


def test_retiming_keeps_the_duration() -> None:
    frames = np.arange(25)[:, None, None, None].repeat(3, axis=3).astype(np.uint8)  # 1 s at 24 fps
    slower = retime(frames, 24, 16)
    assert len(slower) == 17 and slower[0, 0, 0, 0] == 0 and slower[-1, 0, 0, 0] == 24
    assert retime(frames, 24, 24) is frames


# the MP4 and its settings -----------------------------------------------------------------------

def recipe(seed: int, fps: int = 8, prompt: str = "a red ball rolls") -> Recipe:
    request = build_request({"variant": "ti2v-5b", "prompt": prompt, "width": 64, "height": 64,
                             "frames": 9, "fps": fps, "seed": seed}, rng=random.Random(0)).request
    return Recipe(request, prompt, weights="demo", start_image="c" * 64)


def test_the_assembled_mp4_carries_every_parts_recipe(tmp_path) -> None:
    _, parts = chain(((1, 1, 1), (0, 0, 0)), ((1.05, 1, 1), (8, 0, -4)), frames=9)
    recipes = [recipe(1), recipe(2, prompt="the ball bounces")]
    paths = [write_mp4(p, tmp_path / f"part{i}.mp4", 8, r.to_dict())
             for i, (p, r) in enumerate(zip(parts, recipes))]
    out = assemble_mp4(paths, tmp_path / "shot.mp4", [recipes[0], recipes[1].to_dict()])
    frames = read_frames(out)
    assert frames.shape == (17, 32, 48, 3)
    settings = read_settings(out)
    assert settings["format"] == SHOT_FORMAT and len(settings["parts"]) == 2
    assert shot_parts(settings) == recipes
    assert Recipe.from_dict(settings) == recipes[1]  # the newest part: what a remix starts from
    # MP4 round trips included, the seam stays close (the cast was 8, 0, -4)
    assert seam_difference(frames[8], frames[9]) < 2.0


def test_extending_a_shot_again_flattens_its_parts(tmp_path) -> None:
    _, parts = chain(((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (0, 0, 0)), ((1, 1, 1), (0, 0, 0)), frames=5)
    recipes = [recipe(seed) for seed in (1, 2, 3)]
    paths = [write_mp4(p, tmp_path / f"part{i}.mp4", 8, r.to_dict())
             for i, (p, r) in enumerate(zip(parts, recipes))]
    first = assemble_mp4(paths[:2], tmp_path / "first.mp4", recipes[:2])
    again = assemble_mp4([first, paths[2]], tmp_path / "again.mp4", [read_settings(first), recipes[2]])
    assert len(read_frames(again)) == 13 and shot_parts(read_settings(again)) == recipes


def test_a_part_at_another_frame_rate_keeps_its_duration(tmp_path) -> None:
    parent = cast(scene(9))  # 1 s at 8 fps
    child = cast(scene(17))  # 1 s at 16 fps
    paths = [write_mp4(parent, tmp_path / "a.mp4", 8, {}), write_mp4(child, tmp_path / "b.mp4", 16, {})]
    out = assemble_mp4(paths, tmp_path / "shot.mp4", [recipe(1, fps=8), recipe(2, fps=16)])
    assert len(read_frames(out)) == 17  # 2 s at 8 fps


def test_shot_settings_are_checked(tmp_path) -> None:
    single = recipe(1).to_dict()
    assert shot_parts(single) == [recipe(1)] and not is_shot(single)
    with pytest.raises(ShotError, match="version 9"):
        shot_parts({"format": SHOT_FORMAT, "version": 9, "parts": [single]})
    for parts in ([], "x", [single] * 33, [1], [shot_settings([single])]):
        with pytest.raises(ShotError, match="1 to 32 part"):
            shot_parts({"format": SHOT_FORMAT, "version": 1, "parts": parts})
    with pytest.raises(ShotError, match="one recipe per video"):
        assemble_mp4([tmp_path / "a.mp4"], tmp_path / "b.mp4", [])
    assert json.loads(json.dumps(shot_settings([recipe(1)])))["parts"][0]["request"]["seed"] == 1
