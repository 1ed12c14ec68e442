"""Decoding as its own stage: out-of-memory retries in tiles, kept latents, decode again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.decode import DECODE_LADDER, load_latents, save_latents
from pipelines.engine import Engine
from pipelines.errors import StudioError
from pipelines.events import DecodingEvent, DoneEvent, FailedEvent
from pipelines.manager import ModelManager
from pipelines.request import GenerationRequest, build_request


@pytest.fixture(scope="module")
def engine(tiny_weights, tmp_path_factory):
    manager = ModelManager({"ti2v-5b": str(tiny_weights["ti2v-5b"]),
                            "t2v-a14b": str(tiny_weights["t2v-a14b"])},
                           tmp_path_factory.mktemp("decode-cache"), device="cpu", demo_dir=None)
    return Engine(manager)


def request_for(variant="ti2v-5b", **overrides):
    raw = dict(variant=variant, prompt="a red ball rolls across a meadow", width=64, height=64,
               frames=9, steps=3, seed=11, preview={"enabled": False})
    raw.update(overrides)
    return build_request(raw).request


class FailingDecode:
    """Makes `vae.decode` raise an out-of-memory error for its first `failures` calls."""

    def __init__(self, vae, failures):
        self.vae, self.failures, self.calls, self.tiling = vae, failures, 0, []
        self.real = vae.decode

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.tiling.append((self.vae.use_tiling, self.vae.tile_sample_min_height))
        if self.calls <= self.failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.40 GiB")
        return self.real(*args, **kwargs)

    def __enter__(self):
        self.vae.decode = self
        return self

    def __exit__(self, *exc):
        del self.vae.decode


def run(engine, request):
    events = []
    return engine.generate(request, events.append), events


def test_decode_out_of_memory_retries_in_tiles_and_restores_the_vae(engine):
    request = request_for()
    plain, _ = run(engine, request)
    vae = engine.manager.get("ti2v-5b").pipe.vae
    with FailingDecode(vae, failures=1) as failing:
        result, events = run(engine, request)
    assert failing.calls == 2 and failing.tiling == [(False, 256), (True, 256)]
    assert any("decoded in 256 px tiles instead" in n for n in result.notices)
    assert isinstance(events[-1], DoneEvent)
    assert np.array_equal(result.frames, plain.frames)  # 64x64 is one tile: same frames
    assert vae.use_tiling is False  # the retry does not change the next take


def test_every_rung_failing_keeps_the_latents_and_decode_again_finishes(engine, tmp_path):
    request = request_for(seed=12)
    reference, _ = run(engine, request)
    vae = engine.manager.get("ti2v-5b").pipe.vae
    with FailingDecode(vae, failures=len(DECODE_LADDER)) as failing:
        events = []
        with pytest.raises(StudioError) as info:
            engine.generate(request, events.append)
    assert failing.calls == 3 and [t[1] for t in failing.tiling] == [256, 256, 128]
    failed = events[-1]
    assert isinstance(failed, FailedEvent) and failed.message == str(info.value)
    assert "even in 128 px tiles" in failed.message and "--profile 24gb" in failed.message
    assert any(isinstance(e, DecodingEvent) for e in events)
    latents = failed.latents
    assert latents.device.type == "cpu" and tuple(latents.shape) == (1, 48, 3, 4, 4)

    path = save_latents(tmp_path / "kept.safetensors", latents, request.to_json())
    loaded, stored = load_latents(path)
    assert torch.equal(loaded, latents)
    again_events = []
    again = engine.decode_again(GenerationRequest.from_dict(stored), loaded, again_events.append)
    assert np.array_equal(again.frames, reference.frames)
    assert isinstance(again_events[0], DecodingEvent) and isinstance(again_events[-1], DoneEvent)
    assert again.profile == "cpu"


def test_decode_again_refuses_latents_of_another_request(engine):
    events = []
    with pytest.raises(StudioError, match="were not made by this request"):
        engine.decode_again(request_for(width=128), torch.zeros(1, 48, 3, 4, 4), events.append)
    assert isinstance(events[-1], FailedEvent)


def test_damaged_latents_file_is_one_sentence(tmp_path):
    path = save_latents(tmp_path / "x.safetensors", torch.zeros(1, 16, 3, 8, 8), "{}")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StudioError, match="damaged or truncated"):
        load_latents(path)
    with pytest.raises(StudioError, match="No latents file"):
        load_latents(tmp_path / "missing.safetensors")


def test_out_of_memory_while_denoising_names_a_real_setting(engine, monkeypatch):
    transformer = engine.manager.get("t2v-a14b").pipe.transformer

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(transformer, "forward", boom)
    events = []
    with pytest.raises(StudioError, match="--profile 24gb"):
        engine.generate(request_for("t2v-a14b"), events.append)
    assert events[-1].latents is None  # nothing was denoised: nothing to keep
