"""The engine end to end on tiny weights loaded through the real loader."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.engine import Engine, expert_for
from pipelines.errors import GenerationCancelled, RequestError, StudioError
from pipelines.events import (CancelledEvent, DecodingEvent, DoneEvent, FailedEvent, PreviewEvent,
                              StepEvent)
from pipelines.manager import ModelManager
from pipelines.request import PreviewSettings, build_request


@pytest.fixture(scope="module")
def engine(tiny_weights, tmp_path_factory):
    cache = tmp_path_factory.mktemp("engine-cache")
    manager = ModelManager({k: str(v) for k, v in tiny_weights.items()}, cache, device="cpu",
                           demo_dir=None)
    return Engine(manager)


@pytest.fixture(scope="module")
def start_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "start.png"
    pixels = np.zeros((80, 120, 3), np.uint8)
    pixels[:, :60] = (220, 40, 30)
    Image.fromarray(pixels).save(path)
    return str(path)


def request_for(variant, **overrides):
    raw = dict(variant=variant, prompt="a red ball rolls across a meadow", width=64, height=64,
               frames=9, steps=6, seed=1234)
    raw.update(overrides)
    return build_request(raw).request


def run(engine, request, cancel=None):
    events = []
    result = engine.generate(request, events.append, cancel)
    return result, events


@pytest.mark.parametrize("variant", ["t2v-a14b", "i2v-a14b", "ti2v-5b"])
def test_each_variant_end_to_end(engine, start_image, variant):
    image = start_image if variant == "i2v-a14b" else None
    result, events = run(engine, request_for(variant, image_path=image))
    # the 120x80 start image keeps its 3:2 shape at the smallest size (64 px high)
    expected = (9, 64, 96, 3) if image else (9, 64, 64, 3)
    assert result.frames.shape == expected and result.frames.dtype == np.uint8
    steps = [e for e in events if isinstance(e, StepEvent)]
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert [s.index for s in steps] == [1, 2, 3, 4, 5, 6]
    assert len(previews) == 6 and all(p.frames.dtype == np.uint8 for p in previews)
    assert previews[-1].frames.ndim == 4 and previews[-1].frames.shape[-1] == 3
    assert isinstance(events[-2], DecodingEvent) and isinstance(events[-1], DoneEvent)
    assert steps[-1].eta_s == pytest.approx(0.0)
    expected = {"t2v-a14b": {"high-noise", "low-noise"}, "i2v-a14b": {"high-noise", "low-noise"},
                "ti2v-5b": {"single"}}[variant]
    assert {s.expert for s in steps} == expected


def test_ti2v_with_an_image_uses_the_image_pipeline(engine, start_image):
    result, _ = run(engine, request_for("ti2v-5b", image_path=start_image))
    loaded = engine.manager.get("ti2v-5b")
    assert type(loaded._image_pipe).__name__ == "WanImageToVideoPipeline"
    assert result.frames.shape == (9, 64, 96, 3)  # the image's 3:2 shape, on TI2V's grid of 32


@pytest.mark.parametrize("variant,shift", [("t2v-a14b", 12.0), ("i2v-a14b", 5.0)])
def test_experts_really_switch_at_the_boundary(engine, start_image, variant, shift):
    pipe = engine.manager.get(variant).pipeline_for(with_image=False)
    seen = {"transformer": [], "transformer_2": []}
    hooks = [getattr(pipe, name).register_forward_hook(
        lambda module, args, kwargs, out, name=name: seen[name].append(float(kwargs["timestep"][0])),
        with_kwargs=True) for name in seen]
    try:
        image = start_image if variant == "i2v-a14b" else None
        _, events = run(engine, request_for(variant, steps=10, flow_shift=shift, image_path=image))
    finally:
        for hook in hooks:
            hook.remove()
    boundary = pipe.config.boundary_ratio * 1000
    assert seen["transformer"] and seen["transformer_2"]
    assert all(t >= boundary for t in seen["transformer"])
    assert all(t < boundary for t in seen["transformer_2"])
    steps = [e for e in events if isinstance(e, StepEvent)]
    high = sum(e.expert == "high-noise" for e in steps)
    # classifier-free guidance: two forward calls per step
    assert len(seen["transformer"]) == 2 * high and len(seen["transformer_2"]) == 2 * (10 - high)
    assert pipe.scheduler.config.flow_shift == shift


def test_expert_rule_matches_diffusers():
    assert expert_for(875.0, 875.0) == "high-noise"
    assert expert_for(874.9, 875.0) == "low-noise"
    assert expert_for(10.0, None) == "single"


def test_same_request_same_frames_and_seed_matters(engine):
    request = request_for("t2v-a14b")
    first, _ = run(engine, request)
    second, _ = run(engine, request)
    assert np.array_equal(first.frames, second.frames)
    other, _ = run(engine, replace(request, seed=99))
    assert not np.array_equal(first.frames, other.frames)


def test_cancel_stops_within_a_step_skips_decode_and_leaves_pipeline_ready(engine):
    request = request_for("t2v-a14b", steps=8)
    loaded = engine.manager.get("t2v-a14b")
    decodes = []
    original = loaded.pipe.vae.decode
    loaded.pipe.vae.decode = lambda *a, **k: decodes.append(1) or original(*a, **k)
    cancel = threading.Event()
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepEvent) and event.index == 3:
            cancel.set()

    try:
        with pytest.raises(GenerationCancelled):
            engine.generate(request, on_event, cancel)
    finally:
        loaded.pipe.vae.decode = original
    assert isinstance(events[-1], CancelledEvent) and events[-1].steps_done == 3
    assert max(e.index for e in events if isinstance(e, StepEvent)) == 3
    assert not any(isinstance(e, DecodingEvent) for e in events) and decodes == []
    again, _ = run(engine, request)
    fresh = Engine(ModelManager({"t2v-a14b": engine.manager.source_for("t2v-a14b")},
                                engine.manager.cache_dir, device="cpu", demo_dir=None))
    reference, _ = run(fresh, request)
    assert np.array_equal(again.frames, reference.frames)


def test_cancel_before_start(engine):
    cancel = threading.Event()
    cancel.set()
    events = []
    with pytest.raises(GenerationCancelled):
        engine.generate(request_for("ti2v-5b"), events.append, cancel)
    assert events == [CancelledEvent(0)]


def test_full_quality_preview_every_n_steps(engine):
    request = request_for("ti2v-5b", preview=PreviewSettings(decode_every=3, max_side=64))
    _, events = run(engine, request)
    decoded = [e.index for e in events if isinstance(e, PreviewEvent) and e.decoded]
    assert decoded == [3, 6]


def test_previews_can_be_turned_off(engine):
    _, events = run(engine, request_for("ti2v-5b", preview=PreviewSettings(enabled=False)))
    assert not any(isinstance(e, PreviewEvent) for e in events)


def test_long_prompt_is_truncated_with_a_notice(engine):
    result, _ = run(engine, request_for("ti2v-5b", prompt="red ball " * 400))
    assert any("the text encoder reads the first 512" in n for n in result.notices)


def test_vanished_image_is_a_failed_event_with_the_reason(engine, start_image, tmp_path):
    path = tmp_path / "gone.png"
    Image.open(start_image).save(path)
    request = request_for("i2v-a14b", image_path=str(path))
    path.unlink()
    events = []
    with pytest.raises(RequestError, match="was not found"):
        engine.generate(request, events.append)
    assert isinstance(events[-1], FailedEvent) and "was not found" in events[-1].message


def test_out_of_memory_becomes_a_useful_message_and_engine_keeps_working(engine, monkeypatch):
    loaded = engine.manager.get("ti2v-5b")

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loaded.pipe.transformer, "forward", boom)
    events = []
    with pytest.raises(StudioError, match="Out of memory at 64x64, 9 frames"):
        engine.generate(request_for("ti2v-5b"), events.append)
    assert isinstance(events[-1], FailedEvent)
    monkeypatch.undo()
    result, _ = run(engine, request_for("ti2v-5b"))
    assert result.frames.shape[0] == 9


def test_previews_render_only_when_looked_at_and_pickle_as_frames(engine, monkeypatch):
    import pickle

    import pipelines.previews as previews

    calls = []
    real = previews.preview_frames
    monkeypatch.setattr(previews, "preview_frames", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, events = run(engine, request_for("ti2v-5b"))
    shown = [e for e in events if isinstance(e, PreviewEvent)]
    assert len(shown) == 6 and calls == []
    frames = shown[2].frames
    assert calls == [1] and shown[2].frames is frames
    again = pickle.loads(pickle.dumps(shown[4]))
    assert np.array_equal(again.frames, shown[4].frames) and again.index == 5


def test_to_uint8_rounds_and_clips_like_the_whole_array_formula():
    from pipelines.engine import to_uint8

    frames = np.random.default_rng(0).random((1, 5, 8, 8, 3), dtype=np.float32) * 1.2 - 0.1
    expected = (np.clip(frames[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(to_uint8(frames), expected)
    assert to_uint8(np.ones((2, 4, 4, 3), np.float32)).max() == 255


def test_ti2v_image_previews_show_the_start_image_as_frame_zero(engine, start_image, monkeypatch):
    """Frame 0 of each preview is the image latent the transformer saw, not a noisy estimate."""
    import pipelines.previews as previews

    seen = []
    real = previews.preview_frames
    monkeypatch.setattr(previews, "preview_frames",
                        lambda projection, latents, **k: seen.append(latents.clone()) or real(
                            projection, latents, **k))
    _, events = run(engine, request_for("ti2v-5b", image_path=start_image))
    for event in events:
        if isinstance(event, PreviewEvent):
            event.frames
    assert len(seen) == 6
    assert all(torch.equal(s[:, :, 0], seen[0][:, :, 0]) for s in seen)  # the same image latent
    assert not torch.equal(seen[0][:, :, 1], seen[-1][:, :, 1])  # later frames do evolve
