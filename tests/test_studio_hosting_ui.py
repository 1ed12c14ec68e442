"""Studio on a Space: sign-in owner keys, the history note, view copies, and the GPU task path."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import gradio as gr
import pytest

import storage
from pipelines.events import CancelledEvent, DoneEvent, StepEvent
from pipelines.manager import ModelManager
from studio import forms, hosting
from studio.owners import new_owner_key
from pipelines.engine import Engine
from pipelines.stream import event_stream
from studio.server import Studio, build_studio
from studio.views import ViewCopies
from studio_helpers import form_values, weights_map

SPACE = {"SPACE_ID": "someone/wan-studio", "SPACE_HOST": "someone-wan-studio.hf.space"}


@pytest.fixture()
def bare(tmp_path: Path) -> Iterator[Studio]:
    """A studio with no weights (nothing loads a model)."""
    built = build_studio(tmp_path / "data", {}, manager=ModelManager({}, tmp_path / "cache", demo_dir=None))
    yield built
    built.close()


def _space(monkeypatch: pytest.MonkeyPatch, sign_in: bool) -> None:
    for name, value in SPACE.items():
        monkeypatch.setenv(name, value)
    if sign_in:
        monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    else:
        monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)


def _elem_ids(demo: gr.Blocks) -> set[str]:
    return {c["props"].get("elem_id") for c in demo.get_config_file()["components"]}


# -- sign-in --------------------------------------------------------------------------------

def test_a_signed_in_person_owns_the_same_projects_on_every_browser(
        bare: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    _space(monkeypatch, sign_in=True)
    profile = gr.OAuthProfile({"preferred_username": "ada", "name": "Ada", "picture": "",
                               "profile": "https://huggingface.co/ada"})
    page = bare.handlers.load("", profile)
    first_browser, owner = page.browser_key, page.owner
    assert owner == hosting.owner_key(profile, first_browser, bare.handlers.secrets.server)
    assert owner.startswith("hf2-") and "ada" not in owner and owner != first_browser
    with bare.db.session() as s, s.begin():
        storage.create_project(s, owner, "Ada's shoot")
    other = bare.handlers.load(new_owner_key(), profile)
    assert other.browser_key != first_browser and other.owner == owner
    assert "Ada's shoot" in [label for label, _ in other.projects.choices]
    assert "Signed in as ada" in bare.handlers.sign_in_note(profile)
    assert "sign in" in bare.handlers.sign_in_note(None)


def test_an_account_keeps_its_projects_when_its_key_moves_off_the_public_secret(
        bare: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.owners import legacy_account_owner_key

    _space(monkeypatch, sign_in=True)
    profile = gr.OAuthProfile({"preferred_username": "grace", "name": "Grace", "picture": "",
                               "profile": "https://huggingface.co/grace"})
    # Before the server secret existed, grace's key was an HMAC under the browser-state secret,
    # which every visitor can read in the page config: anyone could compute it.
    legacy = legacy_account_owner_key("grace", bare.handlers.secrets.browser_state)
    with bare.db.session() as s, s.begin():
        old = storage.create_project(s, legacy, "Grace's old shoot")
    page = bare.handlers.load("", profile)
    owner = page.owner
    assert owner != legacy and page.project_id == old.id
    assert [label for label, _ in page.projects.choices] == ["Grace's old shoot"]
    with bare.db.read_session() as s, s.begin():
        assert storage.list_projects(s, legacy) == []  # the computable key opens nothing now
    # and a browser cannot claim either key for itself, even with the public secret
    assert bare.handlers.load(legacy, None).owner != legacy
    assert bare.handlers.load(owner, None).owner != owner


def test_anonymous_use_keeps_the_browser_key(bare: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    _space(monkeypatch, sign_in=True)
    key = new_owner_key()
    page = bare.handlers.load(key, None)
    assert page.browser_key == page.owner == key
    fresh = bare.handlers.load("not a key", None)  # a bad stored value
    assert fresh.browser_key == fresh.owner and fresh.browser_key != "not a key"


def test_the_sign_in_button_shows_only_on_a_space_with_oauth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SPACE, "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    off = build_studio(tmp_path / "off", {})
    try:
        assert not {"sign-in", "sign-in-note"} & _elem_ids(off.demo)
        assert off.handlers.sign_in_note(None) == ""
        owner = off.handlers.load(new_owner_key(), None).owner
        assert not owner.startswith(("hf-", "hf2-"))
    finally:
        off.close()
    # A Space with hf_oauth: Gradio attaches its real OAuth routes (authlib, from gradio[oauth]);
    # its settings are read when gradio.oauth is imported, so they are set on the module here.
    pytest.importorskip("authlib", reason="gradio[oauth] (authlib) is needed for Gradio's OAuth routes")
    import gradio.oauth

    _space(monkeypatch, sign_in=True)
    monkeypatch.setenv("SYSTEM", "spaces")
    for name, value in {"OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": "client-secret",
                        "OAUTH_SCOPES": "openid profile",
                        "OPENID_PROVIDER_URL": "https://huggingface.co"}.items():
        monkeypatch.setattr(gradio.oauth, name, value)
    on = build_studio(tmp_path / "on", {})
    try:
        assert {"sign-in", "sign-in-note"} <= _elem_ids(on.demo)
        assert any(type(block).__name__ == "LoginButton" for block in on.demo.blocks.values())
    finally:
        on.close()


# -- history note ----------------------------------------------------------------------------

def test_the_history_note_shows_on_a_space_without_persistent_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _space(monkeypatch, sign_in=False)
    studio = build_studio(tmp_path / "data", {})
    try:
        assert "History is not permanent" in studio.handlers.history_note()
        assert "history-note" in _elem_ids(studio.demo)
    finally:
        studio.close()
    for name in SPACE:
        monkeypatch.delenv(name)
    local = build_studio(tmp_path / "local", {})
    try:
        assert local.handlers.history_note() == ""
        assert "history-note" not in _elem_ids(local.demo)
    finally:
        local.close()


# -- view copies -------------------------------------------------------------------------------

def test_view_copies_link_media_into_a_temp_folder_and_sweep_them(tmp_path: Path) -> None:
    media = tmp_path / "video-0123.mp4"
    media.write_bytes(b"\0\0\0\x18ftypmp42 not really a video")
    views = ViewCopies(ttl_s=60)
    shown = Path(views.of(media))
    assert shown.parent == views.folder and shown.read_bytes() == media.read_bytes()
    assert Path(tempfile.gettempdir()).resolve() in shown.resolve().parents
    assert views.of(media) == str(shown)  # one link per file
    assert views.sweep() == 0 and shown.is_file()
    assert views.sweep(now=time.monotonic() + 10**9) == 1 and not shown.exists()
    assert Path(views.of(media)).is_file()  # made again on the next view
    with pytest.raises(ValueError, match="must be under"):
        ViewCopies(folder=Path.home() / ".wan-studio-view-test-never-made")


# -- the GPU task, off ZeroGPU -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_studio(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    built = build_studio(tmp_path_factory.mktemp("gpu-task"), weights_map(tiny_weights),
                         preview_interval_s=0.0)
    yield built
    built.close()


def test_off_zero_gpu_the_gpu_task_is_the_plain_generator(tiny_studio: Studio) -> None:
    assert not hosting.on_zero_gpu()
    assert tiny_studio.worker.stream.__name__ == "events"  # gpu_task returned it unwrapped
    request = forms.request_from_form(form_values(steps=4), None).request
    events = list(event_stream(Engine(tiny_studio.manager))(request))
    assert [e.index for e in events if isinstance(e, StepEvent)] == [1, 2, 3, 4]
    assert isinstance(events[-1], DoneEvent) and events[-1].result.frames.shape[0] == 9


def test_the_engine_waits_for_each_event_to_be_taken(tiny_studio: Studio) -> None:
    """The engine never runs ahead of the consumer: a cancel set on step 2 stops it at step 2."""
    import threading

    request = forms.request_from_form(form_values(steps=50), None).request
    cancel = threading.Event()
    events = []
    for event in event_stream(Engine(tiny_studio.manager))(request, cancel):
        events.append(event)
        if isinstance(event, StepEvent) and event.index == 2:
            cancel.set()
    assert isinstance(events[-1], CancelledEvent) and events[-1].steps_done == 2
    assert [e.index for e in events if isinstance(e, StepEvent)] == [1, 2]


def test_closing_the_event_stream_cancels_the_run(tiny_studio: Studio) -> None:
    request = forms.request_from_form(form_values(steps=100), None).request
    stream = event_stream(Engine(tiny_studio.manager))(request)
    seen = [next(stream), next(stream)]
    stream.close()  # what spaces does when the parent stops listening on ZeroGPU
    assert any(isinstance(e, StepEvent) for e in seen)
    assert not isinstance(seen[-1], (DoneEvent, CancelledEvent))


def test_a_take_cancels_by_closing_the_stream_as_on_zero_gpu(
        tiny_studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    """On ZeroGPU the cancel flag cannot cross into the GPU worker: the worker closes the stream."""
    monkeypatch.setattr(hosting, "on_zero_gpu", lambda env=None: True)
    owner = tiny_studio.handlers.load("").owner
    made = tiny_studio.handlers.submit(owner, None, None, form_values(steps=100))
    for event in tiny_studio.handlers.watch(made.take_id):
        if isinstance(event, StepEvent) and event.index == 2:
            assert tiny_studio.jobs.cancel(owner, made.take_id)
            step_when_cancelled = tiny_studio.store.get_take(owner, made.take_id).step
    take = tiny_studio.store.get_take(owner, made.take_id)
    # Closing the stream stops the run at its next step: at most the step in progress finishes.
    assert take.status == "cancelled" and take.step <= step_when_cancelled + 1 < 100
    assert take.video_path is None


def test_a_visitor_s_context_reaches_the_gpu_call(tiny_studio: Studio,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ZeroGPU reads the visitor from a ContextVar: the GPU function must see the submitter's."""
    import contextvars

    visitor: contextvars.ContextVar[str] = contextvars.ContextVar("visitor", default="nobody")
    seen: list[str] = []
    worker = tiny_studio.worker
    original = worker.stream

    def gpu_function(request, cancel=None):
        seen.append(visitor.get())
        yield from original(request, cancel)

    monkeypatch.setattr(hosting, "on_zero_gpu", lambda env=None: True)
    monkeypatch.setattr(worker, "stream", gpu_function)
    owner = tiny_studio.handlers.load("").owner
    token = visitor.set("ada")  # as spaces sets it for the request being handled
    try:
        made = tiny_studio.handlers.submit(owner, None, None, form_values(steps=3))
    finally:
        visitor.reset(token)
    assert list(tiny_studio.handlers.watch(made.take_id))[-1].take.status == "completed"
    assert seen == ["ada"], "the worker thread ran the GPU call in the submitter's context"
