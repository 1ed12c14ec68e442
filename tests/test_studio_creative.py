"""The creative tools in the studio (issue 27), without a browser: real storage, the real worker
and engine on tiny weights. End image, extend into a longer shot, variations, compare, the
prompt helper and what each bad input gets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import storage
from pipelines.errors import RequestError
from pipelines.recipe import is_shot, shot_parts
from pipelines.video import read_frames, read_settings
from studio.api import image_from_data_url
from studio.server import Studio, build_studio
from studio_helpers import form_values, weights_map
from test_prompt_helper import save_tiny_lm

I2V = dict(variant="i2v-a14b", flow_shift=5.0)


@pytest.fixture(scope="module")
def studio(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Studio:
    built = build_studio(tmp_path_factory.mktemp("creative-data"), weights_map(tiny_weights),
                         preview_interval_s=0.0)
    yield built
    built.close()


@pytest.fixture()
def owner(studio: Studio) -> tuple[str, int]:
    page = studio.handlers.load("")
    return page.owner, studio.store.project_for_write(page.owner, None)


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> str:
    """A small image with a gradient, so it is a picture and not a flat colour."""
    width, height = size
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    pixels = (np.array(colour, np.float32) * (0.5 + 0.5 * ramp)).repeat(height, axis=0)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def finish(studio: Studio, key: str, take_id: int) -> storage.TakeRecord:
    """Watch a take to its end and return its stored record."""
    for _ in studio.handlers.watch(take_id):
        pass
    return studio.store.get_take(key, take_id)


def submit(studio: Studio, owner: tuple[str, int], lineage: Any = None, **overrides: Any):
    key, project_id = owner
    return studio.handlers.submit(key, project_id, lineage, form_values(**overrides))


# -- first and last frame ----------------------------------------------------------------------

def test_an_end_image_is_stored_recorded_and_reaches_the_engine(
        studio: Studio, owner: tuple[str, int], tmp_path: Path) -> None:
    key, _ = owner
    start = picture(tmp_path / "start.png", (200, 60, 40))
    end = picture(tmp_path / "end.png", (40, 60, 200))
    made = submit(studio, owner, image=start, end_image=end, **I2V)
    take = finish(studio, key, made.take_id)
    assert take.status == "completed", take.error
    assert take.end_image_path and studio.store.media_of(take, "end_image") is not None
    recipe = read_settings(studio.store.media_of(take, "video"))
    assert recipe["end_image"] and recipe["end_image"] != recipe["start_image"]
    assert "last_image_path" not in recipe["request"], "no path in the MP4"
    # remix fills both images back from the media store
    fill = studio.handlers.remix(key, take.id)
    assert Path(fill.values["image"]).is_file() and Path(fill.values["end_image"]).is_file()


@pytest.mark.parametrize(("overrides", "words"), [
    ({"variant": "ti2v-5b", "image": "START"}, "i2v-a14b"),  # TI2V ignores last_image
    ({"variant": "t2v-a14b"}, "i2v-a14b"),
    ({"variant": "i2v-a14b", "flow_shift": 5.0}, "start image"),  # an end image alone
])
def test_an_end_image_where_it_cannot_be_used_gets_a_sentence(
        studio: Studio, owner: tuple[str, int], tmp_path: Path, overrides: dict, words: str) -> None:
    end = picture(tmp_path / "end.png", (40, 60, 200))
    if overrides.get("image") == "START":
        overrides["image"] = picture(tmp_path / "start.png", (200, 60, 40))
    check = studio.handlers.check(form_values(end_image=end, **overrides))
    assert words in check.message and check.slot == "image"
    assert check.field in ("end_image", "image")


def test_a_corrupt_end_image_is_refused_before_anything_is_queued(
        studio: Studio, owner: tuple[str, int], tmp_path: Path) -> None:
    key, project_id = owner
    start = picture(tmp_path / "start.png", (200, 60, 40))
    broken = tmp_path / "end.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    before = len(studio.store.list_takes(key, project_id))
    with pytest.raises(RequestError) as caught:
        submit(studio, owner, image=start, end_image=str(broken), **I2V)
    assert caught.value.field == "end_image" and "end image" in str(caught.value).lower()
    assert len(studio.store.list_takes(key, project_id)) == before


def test_the_api_takes_an_end_image_as_a_data_url(studio: Studio) -> None:
    with pytest.raises(RequestError, match="end_image must be a data URL") as caught:
        image_from_data_url(studio.handlers, "http://example.com/a.png", "end_image")
    assert caught.value.field == "end_image"


# -- longer shots ------------------------------------------------------------------------------

def test_extend_twice_makes_one_shot_with_every_part(studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    root = finish(studio, key, submit(studio, owner).take_id)
    fill = studio.handlers.extend(key, root.id)
    assert fill.lineage["parent_id"] == root.id and fill.lineage["kind"] == "extend"
    assert fill.values["variant"] == "i2v-a14b" and Path(fill.values["image"]).is_file()
    assert fill.values["prompt"] == "a red ball rolls across the meadow", "the same shot"
    form = {**form_values(), **fill.values, "width": 64, "height": 64, "frames": 9, "steps": 6}
    child_id = studio.handlers.submit(key, project_id, fill.lineage, form).take_id
    child = finish(studio, key, child_id)
    assert child.status == "completed" and child.parent_kind == "extend", child.error
    shot = studio.store.media_of(child, "shot")
    assert shot is not None, "the shot is assembled when the extension completes"
    assert len(read_frames(shot)) == 9 + 9 - 1, "the shared frame counts once"
    settings = read_settings(shot)
    assert is_shot(settings) and [p.request.variant for p in shot_parts(settings)] == \
        ["t2v-a14b", "i2v-a14b"]

    fill = studio.handlers.extend(key, child.id)
    form = {**form_values(), **fill.values, "width": 64, "height": 64, "frames": 9, "steps": 6,
            "prompt": "the ball stops"}
    grandchild = finish(studio, key, studio.handlers.submit(key, project_id, fill.lineage,
                                                             form).take_id)
    shot = studio.store.media_of(grandchild, "shot")
    assert len(read_frames(shot)) == 9 + 8 + 8
    parts = shot_parts(read_settings(shot))
    assert [p.user_prompt for p in parts][-1] == "the ball stops" and len(parts) == 3

    # the history shows the chain as one shot; its parts are the group of the selected take
    history = studio.handlers.history(key, project_id)
    assert grandchild.id in history.take_ids
    assert root.id not in history.take_ids and child.id not in history.take_ids
    view = studio.handlers.take_view(key, grandchild.id)
    assert view.group.kind == "shot" and view.group.take_ids == (root.id, child.id, grandchild.id)
    assert "shot" in history.items[history.take_ids.index(grandchild.id)][1]
    assert "whole shot" in view.details

    # deleting a part takes it out of every shot that holds it; the takes keep their own videos
    studio.handlers.delete_take(key, child.id)
    after = studio.store.get_take(key, grandchild.id)
    assert after.shot_path is None and studio.store.media_of(after, "video") is not None
    assert root.id in studio.handlers.history(key, project_id).take_ids, "no longer hidden"


def test_an_extension_whose_start_image_was_changed_is_a_remix_not_a_shot(
        studio: Studio, owner: tuple[str, int], tmp_path: Path) -> None:
    key, project_id = owner
    root = finish(studio, key, submit(studio, owner).take_id)
    fill = studio.handlers.extend(key, root.id)
    other = picture(tmp_path / "other.png", (10, 200, 10))
    form = {**form_values(), **fill.values, "width": 64, "height": 64, "frames": 9, "steps": 6,
            "image": other}
    child = finish(studio, key, studio.handlers.submit(key, project_id, fill.lineage, form).take_id)
    assert child.parent_kind == "remix" and child.shot_path is None
    with pytest.raises(RequestError, match="An extension is one take") as caught:
        studio.handlers.submit(key, project_id, studio.handlers.extend(key, root.id).lineage,
                               {**form, "image": studio.handlers.extend(key, root.id).values["image"],
                                "variations": 2})
    assert caught.value.field == "variations"


def test_extending_an_unfinished_or_missing_take_gets_a_sentence(
        studio: Studio, owner: tuple[str, int]) -> None:
    key, _ = owner
    with pytest.raises(Exception, match="Select a take"):
        studio.handlers.extend(key, None)
    with pytest.raises(Exception, match="no longer exists"):
        studio.handlers.extend(key, 2**40)
    queued = submit(studio, owner, steps=30)
    try:
        with pytest.raises(Exception, match="Only a finished take"):
            studio.handlers.extend(key, queued.take_id)
    finally:
        studio.handlers.cancel(key, queued.take_id)
        finish(studio, key, queued.take_id)


# -- variations --------------------------------------------------------------------------------

def test_variations_queue_one_batch_with_consecutive_seeds_and_keep_one(
        studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    made = submit(studio, owner, variations=3, seed=41)
    assert len(made.take_ids) == 3
    events = list(studio.handlers.watch(made.take_id))  # the first's watch follows the batch
    finished = [e.take.id for e in events if hasattr(e, "take")]
    assert finished == list(made.take_ids)
    batch = studio.store.batch(key, made.take_id)
    assert [t.seed for t in batch] == [41, 42, 43] and all(t.status == "completed" for t in batch)
    view = studio.handlers.take_view(key, made.take_ids[1])
    assert view.in_batch and view.group.kind == "variations"
    assert view.group.take_ids == made.take_ids
    captions = dict(zip(studio.handlers.history(key, project_id).take_ids,
                        (c for _, c in studio.handlers.history(key, project_id).items)))
    assert "var 2/3" in captions[made.take_ids[1]]
    text = studio.handlers.keep_only(key, made.take_ids[1])
    assert "deleted 2 other variations" in text
    assert [t.id for t in studio.store.batch(key, made.take_id)] == [made.take_ids[1]]
    assert not studio.handlers.take_view(key, made.take_ids[1]).group.visible


def test_keep_only_spares_favourites_and_takes_others_grew_from(
        studio: Studio, owner: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    key, project_id = owner
    monkeypatch.setattr(studio.jobs, "limits", replace(studio.jobs.limits, max_queued=8))
    made = submit(studio, owner, variations=4)
    list(studio.handlers.watch(made.take_id))
    first, second, third, fourth = made.take_ids
    studio.store.set_favourite(key, second, True)
    remix = studio.handlers.remix(key, third)
    finish(studio, key, studio.handlers.submit(key, project_id, remix.lineage,
                                               {**form_values(), **remix.values}).take_id)
    text = studio.handlers.keep_only(key, fourth)
    assert "deleted 1 other variation." in text
    assert f"#{second} (a favourite)" in text and f"#{third} (other takes grew from it)" in text
    assert [t.id for t in studio.store.batch(key, first)] == [second, third, fourth]


@pytest.mark.parametrize("count", [0, 9, 2.5, "lots", True, "²", "9" * 5000])
def test_a_bad_number_of_variations_gets_a_sentence(studio: Studio, owner: tuple[str, int],
                                                    count: Any) -> None:
    check = studio.handlers.check(form_values(variations=count))
    assert check.message == "Variations must be a whole number from 1 to 8."
    assert check.field == "variations"


def test_variations_over_the_queue_limit_are_refused_whole(
        studio: Studio, owner: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    key, project_id = owner
    before = len(studio.store.list_takes(key, project_id))
    monkeypatch.setattr(studio.jobs, "limits", replace(studio.jobs.limits, max_queued=3))
    with pytest.raises(storage.QueueFullError, match="ask for fewer variations"):
        submit(studio, owner, variations=4)
    assert len(studio.store.list_takes(key, project_id)) == before, "none of the batch queued"


def test_keep_only_on_a_single_take_gets_a_sentence(studio: Studio, owner: tuple[str, int]) -> None:
    key, _ = owner
    take = finish(studio, key, submit(studio, owner).take_id)
    with pytest.raises(Exception, match="not one of a batch"):
        studio.handlers.keep_only(key, take.id)


# -- compare -----------------------------------------------------------------------------------

def test_compare_shows_both_videos_and_only_the_fields_that_differ(
        studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    first = finish(studio, key, submit(studio, owner, seed=5).take_id)
    second = finish(studio, key, submit(studio, owner, seed=6, steps=5,
                                        camera_movement="pan left").take_id)
    page = studio.handlers.compare(key, first.id, second.id)
    assert page.count('<video class="compare-video"') == 2
    assert f'/media/{first.id}/video?exp=' in page and f'/media/{second.id}/video?exp=' in page
    for label in ("Seed", "Steps", "Camera movement"):
        assert f"<th>{label}</th>" in page
    assert "<th>Width</th>" not in page, "equal fields are not listed"
    assert str(studio.store.db.data_dir) not in page
    choices = studio.handlers.history(key, project_id).finished
    assert (first.id in [i for _, i in choices]) and (second.id in [i for _, i in choices])


@pytest.mark.parametrize(("other", "words"), [
    (None, "Pick a take to compare"), ("", "Pick a take to compare"), ("x' onerror", "Pick a take"),
    ("²", "Pick a take"), ("9" * 5000, "Pick a take"),
    ("SELF", "compared with itself"), (2**40, "no longer exists"),
])
def test_compare_with_a_bad_choice_gets_a_sentence(studio: Studio, owner: tuple[str, int],
                                                   other: Any, words: str) -> None:
    key, _ = owner
    take = finish(studio, key, submit(studio, owner).take_id)
    with pytest.raises(Exception, match=words):
        studio.handlers.compare(key, take.id, take.id if other == "SELF" else other)


def test_compare_refuses_another_owners_take(studio: Studio, owner: tuple[str, int]) -> None:
    key, _ = owner
    mine = finish(studio, key, submit(studio, owner).take_id)
    stranger = studio.handlers.load("")
    theirs_project = studio.store.project_for_write(stranger.owner, None)
    theirs = finish(studio, stranger.owner, studio.handlers.submit(
        stranger.owner, theirs_project, None, form_values()).take_id)
    with pytest.raises(Exception, match="no longer exists"):
        studio.handlers.compare(key, mine.id, theirs.id)


# -- prompt helper -----------------------------------------------------------------------------

def test_without_a_prompt_model_improve_says_how_to_configure_one(studio: Studio) -> None:
    with pytest.raises(RequestError, match="--prompt-model"):
        studio.handlers.improve_prompt(form_values())


def test_a_prompt_model_rewrites_the_shot(tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    folder = save_tiny_lm(tmp_path / "lm")
    built = build_studio(tmp_path / "data", weights_map(tiny_weights), prompt_model=folder)
    try:
        suggestion = built.handlers.improve_prompt(form_values(light_source="daylight"))
        assert suggestion and len(suggestion) <= 4000 and "\n" not in suggestion
        with pytest.raises(RequestError, match="Write a few words"):
            built.handlers.improve_prompt(form_values(prompt="  "))
        with pytest.raises(RequestError, match="not a light source"):
            built.handlers.improve_prompt(form_values(light_source="disco"))
    finally:
        built.close()


def test_a_bad_prompt_model_folder_stops_the_start_with_a_sentence(
        tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    from pipelines.prompt_helper import PromptHelperError

    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptHelperError, match="does not hold a language model"):
        build_studio(tmp_path / "data", weights_map(tiny_weights), prompt_model=tmp_path / "empty")
