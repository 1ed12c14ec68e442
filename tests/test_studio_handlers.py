"""Studio handlers and forms without a browser: real storage, real engine, tiny weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest

import storage
from pipelines.errors import RequestError
from pipelines.manager import ModelManager
from pipelines.request import DEFAULT_NEGATIVE_PROMPT, VariantDefaults
from pipelines.variants import get_variant
from studio import forms
from studio.owners import browser_state_secret, check_owner_key, ensure_owner_key, new_owner_key
from studio.progress_view import animated_webp, progress_html
from studio.runner import Runner, failure_message
from studio.server import Studio, build_studio, launch_kwargs
from studio_helpers import form_values, ordered, weights_map


@pytest.fixture(scope="module")
def studio(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Studio:
    built = build_studio(tmp_path_factory.mktemp("studio-data"), weights_map(tiny_weights),
                         preview_interval_s=0.0)
    yield built
    built.db.close()


@pytest.fixture()
def owner(studio: Studio) -> tuple[str, int]:
    _, key, _, _, _, project_id = studio.handlers.load("")
    assert project_id is None  # a page load writes nothing; the first take makes the project
    return key, studio.handlers.project_for_write(key, project_id)


def run_all(studio: Studio, owner: tuple[str, int], lineage: Any = None, **overrides: Any) -> list[tuple]:
    key, project_id = owner
    return list(studio.handlers.generate(key, project_id, lineage, *ordered(form_values(**overrides))))


# -- forms -----------------------------------------------------------------------------------

def test_form_builds_the_request_with_the_composed_prompt_and_keeps_the_controls() -> None:
    form = form_values(light_source="daylight", camera_movement="pan left", negative_prompt=None)
    made = forms.request_from_form(form, VariantDefaults.official(get_variant("t2v-a14b")))
    assert made.request.prompt == "a red ball rolls across the meadow. Daylight, pan left."
    assert made.request.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    stored = made.stored_dict()
    assert stored["studio"]["controls"]["light_source"] == "daylight"
    back = forms.form_from_stored(stored)
    assert back["prompt"] == "a red ball rolls across the meadow"
    assert back["camera_movement"] == "pan left" and back["width"] == 64


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"prompt": "  "}, "prompt", "Write a prompt"),
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
    with pytest.raises(ValueError, match="form values"):
        forms.form_dict([1, 2])


# -- owners and views ------------------------------------------------------------------------

def test_a_newcomer_gets_a_project_with_their_first_write_not_their_first_visit(
        studio: Studio) -> None:
    browser_key, key, dropdown, items, ids, project_id = studio.handlers.load("")
    assert project_id is None and items == [] and ids == []
    assert dropdown["choices"] == [(storage.DEFAULT_PROJECT_NAME, 0)] and dropdown["value"] == 0
    with studio.db.read_session() as s, s.begin():
        assert storage.get_default_project(s, key) is None and storage.list_projects(s, key) == []
    dropdown, _, made = studio.handlers.rename_project(key, 0, "Beach day")  # names the new one
    assert dropdown["choices"] == [("Beach day", made)] and dropdown["value"] == made


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
    assert failure_message(KeyError("x")).startswith("The run failed with KeyError")


# -- handlers ----------------------------------------------------------------------------------

def test_switching_variant_resets_to_its_defaults_and_inputs(studio: Studio) -> None:
    image, size, width, height, frames_preset, frames, steps, guidance, low, shift = \
        studio.handlers.switch_variant("ti2v-5b")
    assert image["visible"] is True and low["visible"] is False
    assert (width, height, frames, steps, shift) == (1280, 704, 121, 50, 5.0)
    image, *_rest, low, shift = studio.handlers.switch_variant("t2v-a14b")
    assert image["visible"] is False and low["visible"] is True and shift == 12.0


def test_live_prompt_composition(studio: Studio) -> None:
    text = studio.handlers.compose(*ordered(form_values(time_of_day="dusk", lens="telephoto lens")))
    assert text == "a red ball rolls across the meadow. Dusk, telephoto lens."


def test_bad_values_show_next_to_their_control_and_stop_the_run(studio: Studio) -> None:
    out = studio.handlers.field_errors(*ordered(form_values(height=9999)))
    slots = dict(zip(forms.ERROR_SLOTS, out[:len(forms.ERROR_SLOTS)]))
    marks = dict(zip(forms.FORM_FIELDS, out[len(forms.ERROR_SLOTS):]))
    assert "height must be between" in slots["settings"]
    assert all(not text for slot, text in slots.items() if slot != "settings")
    assert marks["height"]["elem_classes"] == ["field-error"] and marks["width"]["elem_classes"] == []
    out = studio.handlers.field_errors(*ordered(form_values(lens="fisheye")))
    assert "not a lens" in out[forms.ERROR_SLOTS.index("controls")]
    with pytest.raises(gr.Error, match="height must be between"):
        studio.handlers.require_valid(*ordered(form_values(height=9999)))
    assert not any(studio.handlers.field_errors(*ordered(form_values()))[:len(forms.ERROR_SLOTS)])
    studio.handlers.require_valid(*ordered(form_values()))


def test_generate_streams_in_order_and_stores_the_take(studio: Studio,
                                                       owner: tuple[str, int]) -> None:
    outputs = run_all(studio, owner, light_source="daylight")
    previews = [i for i, o in enumerate(outputs) if isinstance(o[0], str) and "<img" in o[0]]
    steps = [o[1] for o in outputs if isinstance(o[1], str) and "Step " in o[1]]
    assert len(previews) >= 2 and "Step 1 / 6" in steps[0] and "Step 6 / 6" in steps[-2]
    final = outputs[-1]
    assert final[2] and Path(final[2]).is_file() and previews[-1] < len(outputs) - 1
    take_id = final[3]
    assert take_id in final[5]
    with studio.db.read_session() as s, s.begin():
        take = storage.get_take(s, owner[0], take_id)
    assert take.status == "completed" and take.prompt.endswith("Daylight.")
    assert take.request["studio"]["controls"]["light_source"] == "daylight"


def test_history_select_remix_favourite_delete(studio: Studio, owner: tuple[str, int]) -> None:
    key, project_id = owner
    take_id = run_all(studio, owner, camera_movement="push in")[-1][3]
    items, ids = studio.handlers.refresh_history(key, project_id)
    index = ids.index(take_id)
    assert "completed" in items[index][1] and Path(items[index][0]).is_file()
    chosen, video, details, label = studio.handlers.select_take(key, ids, gr.SelectData(None, {"index": index, "value": None}))
    assert chosen == take_id and Path(video).is_file() and "Push in." in details
    remixed = studio.handlers.remix(key, take_id)
    values = dict(zip(forms.FORM_FIELDS, remixed[:len(forms.FORM_FIELDS)]))
    assert values["camera_movement"] == "push in" and values["prompt"].startswith("a red ball")
    assert remixed[len(forms.FORM_FIELDS)] == {"parent_id": take_id, "kind": "remix"}
    child = run_all(studio, owner, remixed[len(forms.FORM_FIELDS)])[-1][3]
    with studio.db.read_session() as s, s.begin():
        assert storage.get_take(s, key, child).parent_kind == "remix"
    label, *_ = studio.handlers.toggle_favourite(key, take_id, project_id)
    assert label.startswith("★")
    studio.handlers.delete_take(key, take_id, project_id)
    assert take_id not in studio.handlers.refresh_history(key, project_id)[1]


def test_continue_uses_the_last_frame_for_image_to_video(studio: Studio,
                                                         owner: tuple[str, int]) -> None:
    key, project_id = owner
    take_id = run_all(studio, owner)[-1][3]
    out = studio.handlers.continue_take(key, take_id)
    values = dict(zip(forms.FORM_FIELDS, out[:len(forms.FORM_FIELDS)]))
    assert values["variant"] == "i2v-a14b" and Path(values["image"]["value"]).is_file()
    lineage = out[len(forms.FORM_FIELDS)]
    form = form_values(variant="i2v-a14b", image=values["image"]["value"], flow_shift=5.0,
                       prompt="the ball keeps rolling", camera_movement="pan right")
    child = list(studio.handlers.generate(key, project_id, lineage, *ordered(form)))[-1][3]
    with studio.db.read_session() as s, s.begin():
        take = storage.get_take(s, key, child)
        chain = storage.lineage(s, key, child)
    assert take.status == "completed" and take.parent_kind == "continue" and take.image_path
    assert [t.id for t in chain] == [take_id, child]
    assert take.prompt == "the ball keeps rolling. Pan right."


def test_projects_create_rename_delete_and_owner_isolation(studio: Studio,
                                                           owner: tuple[str, int]) -> None:
    key, _ = owner
    dropdown, items, ids, _, project_id = studio.handlers.create_project(key, "Night shoot")
    assert items == [] and ids == []
    assert any(label.startswith("Night shoot") for label, _ in dropdown["choices"])
    dropdown, _, same_id = studio.handlers.rename_project(key, project_id, "Dusk shoot")
    assert same_id == project_id
    assert any(label.startswith("Dusk shoot") for label, _ in dropdown["choices"])
    stranger = new_owner_key()
    with pytest.raises(gr.Error):
        studio.handlers.rename_project(stranger, project_id, "mine now")
    assert studio.handlers.history(stranger, project_id).take_ids == []
    with pytest.raises(gr.Error, match="nothing to delete"):
        studio.handlers.delete_project(key, None)
    dropdown, *_rest, new_id = studio.handlers.delete_project(key, project_id)
    assert new_id != project_id
    with pytest.raises(gr.Error, match="no longer exists"):
        studio.handlers.remix(stranger, studio.handlers.history(key, new_id).take_ids[0]
                              if studio.handlers.history(key, new_id).take_ids else 10**6)


def test_cancel_stops_within_a_step_and_keeps_the_take(studio: Studio,
                                                       owner: tuple[str, int]) -> None:
    key, project_id = owner
    stream = studio.handlers.generate(key, project_id, None, *ordered(form_values(steps=100)))
    take_id = None
    steps_seen = 0
    for out in stream:
        take_id = take_id or out[3]
        if isinstance(out[1], str) and "Step " in out[1]:
            steps_seen += 1
            if steps_seen == 2:
                assert studio.handlers.runner.cancel(key, take_id)
                with studio.db.read_session() as s, s.begin():
                    step_when_cancelled = storage.get_take(s, key, take_id).step
    assert "Cancelled" in out[1]
    with studio.db.read_session() as s, s.begin():
        take = storage.get_take(s, key, take_id)
    # The stream may lag the engine; once cancelled, only the step in progress may finish.
    assert take.status == "cancelled" and take.step <= step_when_cancelled + 1 < 100
    assert take.video_path is None


def test_a_failure_marks_the_take_failed_and_the_runner_keeps_serving(
        studio: Studio, owner: tuple[str, int], tmp_path: Path) -> None:
    key, project_id = owner
    broken = ModelManager({"t2v-a14b": str(tmp_path / "missing")}, tmp_path / "cache", demo_dir=None)
    from pipelines.engine import Engine

    runner = Runner(studio.db, Engine(broken), preview_interval_s=0)
    made = forms.request_from_form(form_values(), None)
    updates = list(runner.generate(key, project_id, made.request, made.stored_dict()))
    assert updates[-1].kind == "failed" and updates[-1].take.status == "failed"
    assert updates[-1].message and updates[-1].take.error == updates[-1].message
    assert run_all(studio, owner)[-1][2] is not None  # the studio's own runner still works


def test_no_weights_configured_says_how_to_pass_them(tmp_path: Path) -> None:
    manager = ModelManager({}, tmp_path / "cache", demo_dir=None)
    bare = build_studio(tmp_path / "data", {}, manager=manager)
    try:
        assert "--weights" in bare.handlers.weights_note()
        _, key, _, _, _, project_id = bare.handlers.load(None)
        errors = bare.handlers.field_errors(*ordered(form_values()))
        assert "No weights are configured" in errors[forms.ERROR_SLOTS.index("variant")]
        with pytest.raises(gr.Error, match="--weights"):
            next(bare.handlers.generate(key, project_id, None, *ordered(form_values())))
    finally:
        bare.db.close()


def test_launch_serves_no_folder_by_path_and_blocks_the_data_folder(studio: Studio) -> None:
    kwargs = launch_kwargs(studio, "127.0.0.1", 7861)
    assert kwargs["allowed_paths"] == []
    assert kwargs["blocked_paths"] == [str(studio.data_dir.resolve())]
    assert kwargs["share"] is False and kwargs["css_paths"][0].is_file()
    paths = {getattr(route, "path", "") for route in kwargs["app_kwargs"]["routes"]}
    assert {"/share/{token}", "/media/{take_id}/{kind}"} <= paths


def test_share_revoke_and_remix_from_a_link(studio: Studio, owner: tuple[str, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.requests import Request

    monkeypatch.setenv("WAN_STUDIO_PUBLIC_URL", "https://studio.example")
    key, _ = owner
    take_id = run_all(studio, owner, style="claymation")[-1][3]
    url = studio.handlers.share(key, take_id, False, None)
    assert url.startswith("https://studio.example/share/")
    with pytest.raises(gr.Error, match="no longer exists"):
        studio.handlers.share(new_owner_key(), take_id, False, None)
    token = url.rsplit("/", 1)[-1]
    visit = gr.Request(request=Request({"type": "http", "method": "GET", "path": "/",
                                        "query_string": f"remix={token}".encode(), "headers": []}))
    filled = studio.handlers.remix_from_link(visit)
    values = dict(zip(forms.FORM_FIELDS, filled[:len(forms.FORM_FIELDS)]))
    assert values["style"] == "claymation" and values["prompt"] == "a red ball rolls across the meadow"
    with pytest.raises(gr.Error, match="not one of yours"):
        studio.handlers.revoke(new_owner_key(), url)
    assert studio.handlers.revoke(key, url)[0] == ""
    after = studio.handlers.remix_from_link(visit)
    assert "no longer works" in after[-1]
