"""Studio handlers and forms without a browser: real storage, the real worker and engine, tiny
weights. Handlers take form values by name and return small views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest

import storage
from pipelines.errors import RequestError
from pipelines.events import DecodingEvent, StepEvent
from pipelines.manager import ModelManager
from pipelines.recipe import Recipe
from pipelines.request import DEFAULT_NEGATIVE_PROMPT, VariantDefaults
from pipelines.variants import get_variant
from studio import forms
from pipelines.variants import continue_variant
from studio.owners import browser_state_secret, check_owner_key, ensure_owner_key, new_owner_key
from studio.progress_view import animated_webp, progress_html
from studio.server import Studio, build_studio, launch_kwargs
from studio.take_events import PreviewImage, TakeFinished, TakeQueued, TakeStarted
from studio.worker import failure_message
from studio_helpers import form_values, weights_map


@pytest.fixture(scope="module")
def studio(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Studio:
    built = build_studio(tmp_path_factory.mktemp("studio-data"), weights_map(tiny_weights),
                         preview_interval_s=0.0)
    yield built
    built.close()


@pytest.fixture()
def owner(studio: Studio) -> tuple[str, int]:
    page = studio.handlers.load("")
    assert page.project_id is None  # a page load writes nothing; the first take makes the project
    return page.owner, studio.store.project_for_write(page.owner, None)


def run_all(studio: Studio, owner: tuple[str, int], lineage: Any = None, **overrides: Any) -> list:
    """Submit a take and watch it to its end; the events in order."""
    key, project_id = owner
    made = studio.handlers.submit(key, project_id, lineage, form_values(**overrides))
    return list(studio.handlers.watch(made.take_id))


# -- forms -----------------------------------------------------------------------------------

def test_form_builds_the_recipe_with_the_composed_prompt_and_keeps_the_controls() -> None:
    form = form_values(light_source="daylight", camera_movement="pan left", negative_prompt=None)
    made = forms.request_from_form(form, VariantDefaults.official(get_variant("t2v-a14b")))
    assert made.request.prompt == "a red ball rolls across the meadow. Daylight, pan left."
    assert made.request.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    recipe = made.recipe()
    stored = recipe.to_dict()
    assert stored["controls"]["light_source"] == "daylight" and "image_path" not in stored["request"]
    back = forms.form_from_recipe(Recipe.from_dict(stored))
    assert back["prompt"] == "a red ball rolls across the meadow"
    assert back["camera_movement"] == "pan left" and back["width"] == 64


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"prompt": "  "}, "prompt", "Write a prompt"),
    ({"prompt": "x" * 4001}, "prompt", "the most is 4,000"),
    ({"width": 5000}, "width", "width must be between"),
    ({"steps": "many"}, "steps", "steps must be a number"),
    ({"image": "/tmp/x.png"}, "image", "text only"),
    ({"variant": "i2v-a14b"}, "image", "needs a start image"),
    ({"light_source": "disco"}, "controls", "not a light source"),
    ({"variant": "wan3"}, "variant", "Unknown variant"),
    ({"seed": -5}, "seed", "seed must be between"),
])
def test_bad_form_values_name_the_control(overrides: dict, field: str, words: str) -> None:
    with pytest.raises(RequestError, match=words) as caught:
        forms.request_from_form(form_values(**overrides), None)
    assert caught.value.field == field


def test_snapping_is_reported_as_a_notice() -> None:
    made = forms.request_from_form(form_values(width=70, frames=10), None)
    assert (made.request.width, made.request.frames) == (64, 9)
    assert any("snapped" in n for n in made.notices)


def test_presets_follow_the_variant() -> None:
    spec = get_variant("ti2v-5b")
    presets = forms.size_presets("ti2v-5b", VariantDefaults.official(spec))
    assert presets[:2] == ["1280x704", "704x1280"] and presets[-1] == "custom"
    assert forms.parse_size("832x480") == (832, 480) and forms.parse_size("custom") is None
    assert all((f - 1) % 4 == 0 for f in forms.frame_presets(VariantDefaults.official(spec)))


def test_continue_takes_the_first_image_variant_of_the_table_that_has_weights() -> None:
    assert continue_variant(["t2v-a14b", "i2v-a14b", "ti2v-5b"]) == "i2v-a14b"
    assert continue_variant(["t2v-a14b", "ti2v-5b"]) == "ti2v-5b"


# -- owners and views ------------------------------------------------------------------------

def test_a_newcomer_gets_a_project_with_their_first_write_not_their_first_visit(
        studio: Studio) -> None:
    page = studio.handlers.load("")
    assert page.project_id is None and page.history.items == [] and page.unfinished is None
    assert page.projects.choices == [(storage.DEFAULT_PROJECT_NAME, 0)]
    assert page.projects.selected == 0
    assert studio.store.default_project(page.owner) is None
    assert studio.store.list_projects(page.owner) == []
    projects, made = studio.handlers.rename_project(page.owner, 0, "Beach day")  # names the new one
    assert projects.choices == [("Beach day", made)] and projects.selected == made


def test_a_reload_returns_to_the_project_the_browser_was_in(studio: Studio,
                                                           owner: tuple[str, int]) -> None:
    key, first = owner
    _, second = studio.handlers.create_project(key, "Night shoot")
    assert studio.handlers.load(key, None, first).project_id == first
    assert studio.handlers.load(key, None, second).project_id == second
    stranger = studio.handlers.load("", None, second)  # someone else's id: their own default
    assert stranger.project_id is None


def test_owner_keys_and_the_browser_secret(tmp_path: Path) -> None:
    key = new_owner_key()
    assert ensure_owner_key(key) == key and ensure_owner_key("") != ""
    assert ensure_owner_key("short") != "short"
    with pytest.raises(ValueError, match="16-128 characters"):
        check_owner_key("../../etc")
    secret = browser_state_secret(tmp_path)
    assert secret == browser_state_secret(tmp_path) and len(secret) >= 32
    assert (tmp_path / "browser-state.secret").stat().st_mode & 0o077 == 0


def test_progress_line_labels_the_low_noise_stage() -> None:
    line = progress_html(20, 40, "low-noise", 12.0, 30.0)
    assert "Low-noise expert: detail" in line and "Step 20 / 40" in line and "0:30" in line
    assert "High-noise expert: layout and motion" in progress_html(1, 40, "high-noise", 1, None)
    with pytest.raises(ValueError, match="uint8"):
        animated_webp(np.zeros((2, 8, 8, 3), np.float32))


def test_failure_message_for_out_of_memory() -> None:
    import torch

    assert "ran out of memory" in failure_message(torch.OutOfMemoryError("CUDA out of memory"))
    assert "KeyError" in failure_message(KeyError("x"))


def test_the_form_check_names_the_slot_and_field(studio: Studio) -> None:
    check = studio.handlers.check(form_values(height=9999))
    assert check.slot == "settings" and check.field == "height" and "height must be" in check.message
    check = studio.handlers.check(form_values(lens="fisheye"))
    assert check.slot == "controls" and "not a lens" in check.message
    assert studio.handlers.check(form_values()).message == ""


# -- generation ------------------------------------------------------------------------------

def test_a_take_streams_in_order_and_is_stored_with_its_recipe(studio: Studio,
                                                              owner: tuple[str, int]) -> None:
    events = run_all(studio, owner, light_source="daylight")
    kinds = [type(e) for e in events]
    assert kinds[0] in (TakeQueued, TakeStarted) and kinds[-1] is TakeFinished
    steps = [e.index for e in events if isinstance(e, StepEvent)]
    assert steps == list(range(1, 7))
    previews = [i for i, e in enumerate(events) if isinstance(e, PreviewImage)]
    decoding = kinds.index(DecodingEvent)
    assert len(previews) >= 2 and previews[-1] < decoding
    take = events[-1].take
    assert take.status == "completed" and take.prompt.endswith("Daylight.")
    recipe = Recipe.from_dict(take.request)
    assert recipe.controls.light_source == "daylight" and recipe.weights == "local folder t2v-a14b"
    from pipelines.video import read_settings

    video = studio.store.media_of(take, "video")
    assert Recipe.from_dict(read_settings(video)) == recipe, "the MP4 carries the same recipe"


def test_history_select_remix_favourite_delete(studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    take_id = run_all(studio, owner, camera_movement="push in")[-1].take.id
    view = studio.handlers.history(key, project_id)
    index = view.take_ids.index(take_id)
    assert "done" in view.items[index][1] and Path(view.items[index][0]).is_file()
    chosen = studio.handlers.select_take(key, view.take_ids, index)
    assert chosen.take_id == take_id and Path(chosen.video).is_file()
    assert "Push in." in chosen.details and not chosen.has_image
    remixed = studio.handlers.remix(key, take_id)
    assert remixed.values["camera_movement"] == "push in"
    assert remixed.values["prompt"].startswith("a red ball")
    assert remixed.lineage == {"parent_id": take_id, "kind": "remix"}
    child = run_all(studio, owner, remixed.lineage)[-1].take
    assert child.parent_kind == "remix" and child.parent_id == take_id
    assert studio.handlers.toggle_favourite(key, take_id).favourite
    studio.handlers.delete_take(key, take_id)
    assert take_id not in studio.handlers.history(key, project_id).take_ids


def test_continue_uses_the_last_frame_for_image_to_video(studio: Studio,
                                                         owner: tuple[str, int]) -> None:
    key, project_id = owner
    take_id = run_all(studio, owner)[-1].take.id
    fill = studio.handlers.continue_take(key, take_id)
    assert fill.values["variant"] == "i2v-a14b" and Path(fill.values["image"]).is_file()
    form = form_values(variant="i2v-a14b", image=fill.values["image"], flow_shift=5.0,
                       prompt="the ball keeps rolling", camera_movement="pan right")
    child = run_all(studio, owner, fill.lineage, **{k: form[k] for k in form})[-1].take
    assert child.status == "completed" and child.parent_kind == "continue" and child.image_path
    assert [t.id for t in studio.store.lineage(key, child.id)] == [take_id, child.id]
    assert child.prompt == "the ball keeps rolling. Pan right."
    assert not Path(fill.values["image"]).exists(), "the scratch frame went once stored"


def test_projects_create_rename_delete_names_and_owner_isolation(studio: Studio,
                                                                 owner: tuple[str, int]) -> None:
    key, _ = owner
    projects, project_id = studio.handlers.create_project(key, "Dusk shoot")
    assert ("Dusk shoot", project_id) in projects.choices
    with pytest.raises(storage.InvalidInputError, match="already have a project called"):
        studio.handlers.create_project(key, "dusk SHOOT")
    projects, same = studio.handlers.rename_project(key, project_id, "Dawn shoot")
    assert same == project_id and ("Dawn shoot", project_id) in projects.choices
    stranger = new_owner_key()
    with pytest.raises(storage.NotFoundError):
        studio.handlers.rename_project(stranger, project_id, "mine now")
    assert studio.handlers.history(stranger, project_id).take_ids == []
    with pytest.raises(gr.Error, match="nothing to delete"):
        studio.handlers.delete_project(key, None)
    _, remaining = studio.handlers.delete_project(key, project_id)
    assert remaining != project_id


def test_cancel_stops_within_a_step_and_keeps_the_take(studio: Studio,
                                                       owner: tuple[str, int]) -> None:
    key, project_id = owner
    made = studio.handlers.submit(key, project_id, None, form_values(steps=100))
    cancelled_at = None
    for event in studio.handlers.watch(made.take_id):
        if isinstance(event, StepEvent) and event.index == 2:
            assert studio.jobs.cancel(new_owner_key(), made.take_id) is False, "not a stranger's"
            assert "Cancelling" in studio.handlers.cancel(key, made.take_id)
            cancelled_at = studio.store.get_take(key, made.take_id).step
    take = event.take
    assert take.status == "cancelled" and take.video_path is None
    assert take.step <= cancelled_at + 1 < 100 and take.error.startswith("Cancelled after")


def test_closing_the_watch_does_not_cancel_the_take(studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    made = studio.handlers.submit(key, project_id, None, form_values(steps=12))
    watch = studio.handlers.watch(made.take_id)
    next(watch)
    watch.close()  # the tab closed
    events = list(studio.handlers.watch(made.take_id))  # the tab came back
    assert events[-1].take.status == "completed"


def test_a_queued_take_is_cancelled_at_once(studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    first = studio.handlers.submit(key, project_id, None, form_values(steps=60))
    second = studio.handlers.submit(key, project_id, None, form_values(steps=6))
    assert studio.handlers.cancel(key, second.take_id)
    ended = list(studio.handlers.watch(second.take_id))[-1].take
    assert ended.status == "cancelled" and ended.error == "Cancelled before it started."
    studio.handlers.cancel(key, first.take_id)
    assert list(studio.handlers.watch(first.take_id))[-1].take.status == "cancelled"


def test_a_failure_marks_the_take_failed_and_the_worker_keeps_serving(
        studio: Studio, owner: tuple[str, int], tmp_path: Path) -> None:
    from pipelines.engine import Engine
    from pipelines.stream import event_stream
    from studio.worker import Worker

    key, project_id = owner
    broken = ModelManager({"t2v-a14b": str(tmp_path / "missing")}, tmp_path / "cache", demo_dir=None)
    studio.worker.stop()  # let a worker with broken weights take the next take
    try:
        made = forms.request_from_form(form_values(), None)
        take = studio.store.submit_take(key, project_id, made.recipe().to_dict())
        lone = Worker(studio.store, event_stream(Engine(broken)), studio.jobs.bus, lease_s=5)
        assert lone.run_once() is True
        failed = studio.store.get_take(key, take.id)
        assert failed.status == "failed" and "weights" in failed.error.lower()
        assert lone.run_once() is False, "the worker is still there, with nothing to do"
    finally:
        studio.worker._stopping.clear()
        studio.worker.start()
    assert run_all(studio, owner)[-1].take.status == "completed", "the studio's own worker works"


def test_no_weights_configured_says_how_to_pass_them(tmp_path: Path) -> None:
    manager = ModelManager({}, tmp_path / "cache", demo_dir=None)
    bare = build_studio(tmp_path / "data", {}, manager=manager)
    try:
        assert "--weights" in bare.handlers.weights_note()
        page = bare.handlers.load(None)
        check = bare.handlers.check(form_values())
        assert check.slot == "variant" and "No weights are configured" in check.message
        with pytest.raises(RequestError, match="--weights"):
            bare.handlers.submit(page.owner, None, None, form_values())
    finally:
        bare.close()


def test_the_demo_weights_say_what_they_know(tmp_path: Path) -> None:
    demo = build_studio(tmp_path / "data", {})
    try:
        note = demo.handlers.weights_note()
        assert "Demo weights" in note and "know only a few words" in note
        assert "purple" in note and "pyramid" in note and "pan left" in note
    finally:
        demo.close()


def test_launch_serves_no_folder_by_path_and_blocks_the_data_folder(studio: Studio) -> None:
    kwargs = launch_kwargs(studio, "127.0.0.1", 7861)
    assert kwargs["allowed_paths"] == []
    assert kwargs["blocked_paths"] == [str(studio.data_dir.resolve())]
    assert kwargs["share"] is False and kwargs["css_paths"][0].is_file()
    paths = {getattr(route, "path", "") for route in kwargs["app_kwargs"]["routes"]}
    assert {"/share/{token}", "/media/{take_id}/{kind}"} <= paths


def test_share_revoke_and_remix_from_a_link(studio: Studio, owner: tuple[str, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_STUDIO_PUBLIC_URL", "https://studio.example")
    key, _ = owner
    take_id = run_all(studio, owner, style="claymation")[-1].take.id
    assert studio.handlers.take_view(key, take_id).share_url == "", "not shared yet"
    view = studio.handlers.share(key, take_id, False)
    assert view.share_url.startswith("https://studio.example/share/")
    assert studio.handlers.take_view(key, take_id).share_url == view.share_url
    with pytest.raises(gr.Error, match="no longer exists"):
        studio.handlers.share(new_owner_key(), take_id, False)
    token = view.share_url.rsplit("/", 1)[-1]
    fill = studio.handlers.remix_from_link(token)
    assert fill.values["style"] == "claymation"
    assert fill.values["prompt"] == "a red ball rolls across the meadow"
    with pytest.raises(gr.Error, match="no longer exists"):
        studio.handlers.revoke(new_owner_key(), take_id)
    assert studio.handlers.revoke(key, take_id).share_url == ""
    assert studio.handlers.remix_from_link(token) is None


def test_a_failed_decode_keeps_its_latents_and_decode_again_finishes_it(
        studio: Studio, owner: tuple[str, int]) -> None:
    import torch

    key, project_id = owner
    run_all(studio, owner)  # the model is loaded
    vae = studio.manager.get("t2v-a14b").pipe.vae
    real = vae.decode
    calls = {"n": 0}

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.40 GiB")

    vae.decode = out_of_memory
    try:
        failed = run_all(studio, owner, seed=21)[-1].take
    finally:
        vae.decode = real
    assert calls["n"] == 3, "plain, tiled, smaller tiles: then it gives up"
    assert failed.status == "failed" and failed.decodable and "Decode again" in failed.error
    assert studio.store.media_of(failed, "latents") is not None
    view = studio.handlers.take_view(key, failed.id)
    assert view.decodable
    again = studio.handlers.decode_again(key, failed.id)
    events = list(studio.handlers.watch(again))
    done = events[-1].take
    assert done.id == failed.id and done.status == "completed" and not done.decodable
    assert not [e for e in events if isinstance(e, StepEvent)], "decoded, not denoised again"
    assert done.latents_path is None and studio.store.media_of(done, "video") is not None
    with pytest.raises(gr.Error, match="decoded again"):
        studio.handlers.decode_again(key, done.id)


def test_a_project_exports_to_a_zip_and_imports_as_a_new_project(studio: Studio,
                                                                 owner: tuple[str, int]) -> None:
    key, project_id = owner
    run_all(studio, owner, prompt="a take to carry over")
    exported = Path(studio.handlers.export_project(key, project_id))
    assert exported.suffix == ".zip" and exported.name.startswith("wan-studio-")
    stranger = studio.handlers.load("").owner
    projects, imported = studio.handlers.import_project(stranger, str(exported))
    assert imported != project_id and len(projects.choices) == 1
    takes = studio.store.list_takes(stranger, imported)
    assert [t.prompt for t in takes][-1].startswith("a take to carry over")
    assert all(studio.store.media_of(t, "video") for t in takes if t.status == "completed")
    with pytest.raises(gr.Error, match="nothing to export"):
        studio.handlers.export_project(key, None)
    broken = exported.with_name("broken.zip")
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(storage.InvalidInputError, match="not a Wan Studio project export"):
        studio.handlers.import_project(stranger, str(broken))
    assert len(studio.store.list_projects(stranger)) == 1, "a bad zip changes nothing"
