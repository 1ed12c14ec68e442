"""Speed levers: each cache, compile and the attention backend run, and leave no trace behind."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.engine import Engine
from pipelines.events import StepEvent
from pipelines.manager import ModelManager
from pipelines.request import build_request
from pipelines.speed import COMPILE_BACKEND_ENV, steps_per_expert


@pytest.fixture(scope="module")
def engine(tiny_weights, tmp_path_factory):
    return Engine(ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])},
                               tmp_path_factory.mktemp("speed-cache"), device="cpu", demo_dir=None))


def take(engine, speed=None, watch=None):
    request = build_request(dict(variant="t2v-a14b", prompt="a red ball rolls across a meadow",
                                 width=64, height=64, frames=5, steps=6, seed=9, flow_shift=5.0,
                                 preview={"enabled": False}, speed=speed or {})).request
    seen = []

    def on_event(event):
        if isinstance(event, StepEvent) and watch is not None:
            seen.append(watch())

    return engine.generate(request, on_event), seen


@pytest.fixture(scope="module")
def plain(engine):
    return take(engine)[0].frames


def experts(engine):
    pipe = engine.manager.get("t2v-a14b").pipe
    return pipe.transformer, pipe.transformer_2


@pytest.mark.parametrize("speed", [
    {"cache": "first-block", "cache_threshold": 1.0},
    {"cache": "taylorseer", "cache_interval": 2},
    {"cache": "magcache", "mag_ratios_high": [1.0, 0.98, 0.97], "mag_ratios_low": [1.0, 0.99, 0.95, 0.9]},
])
def test_each_step_cache_is_on_during_the_take_and_off_after(engine, plain, speed):
    high, low = experts(engine)
    result, seen = take(engine, speed, watch=lambda: (high.is_cache_enabled, low.is_cache_enabled))
    assert seen and all(state == (True, True) for state in seen)  # both experts, every step
    assert not np.array_equal(result.frames, plain)  # steps were skipped or predicted
    assert not high.is_cache_enabled and not low.is_cache_enabled
    assert np.array_equal(take(engine)[0].frames, plain)


def test_magcache_counts_each_experts_own_steps(engine):
    """diffusers counts MagCache steps for the whole run (#14025); each expert is told its own."""
    from pipelines.engine import _boundary, _with_shift

    pipe = engine.manager.get("t2v-a14b").pipe
    high, low = steps_per_expert(_with_shift(pipe.scheduler, 5.0), 6, _boundary(pipe), 2)
    ratios = {"cache": "magcache", "mag_ratios_high": [1.0, 0.98], "mag_ratios_low": [1.0, 0.95]}
    _, seen = take(engine, ratios, watch=lambda: (pipe.transformer._cache_config.num_inference_steps,
                                                  pipe.transformer_2._cache_config.num_inference_steps))
    assert set(seen) == {(high, low)}
    events = []
    request = build_request(dict(variant="t2v-a14b", prompt="x", width=64, height=64, frames=5,
                                 steps=6, seed=9, flow_shift=5.0, preview={"enabled": False})).request
    engine.generate(request, events.append)
    run = [e.expert for e in events if isinstance(e, StepEvent)]
    assert (run.count("high-noise"), run.count("low-noise")) == (high, low) and high and low


def test_compile_runs_and_is_undone_before_a_plain_take(engine, plain, monkeypatch):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")  # Dynamo's full graph capture, no codegen
    high, low = experts(engine)

    def compiled(model):
        return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())

    result, seen = take(engine, {"compile": True}, watch=lambda: (compiled(high), compiled(low)))
    assert seen and all(state == (True, True) for state in seen)
    assert np.array_equal(result.frames, plain)  # the eager backend runs the same kernels
    again = take(engine)[0]
    assert not compiled(high) and not compiled(low)
    assert np.array_equal(again.frames, plain)


def test_a_missing_attention_kernel_falls_back_to_native_with_a_notice(engine, plain):
    result, _ = take(engine, {"attention": "flash"})
    assert any("flash attention backend needs a CUDA GPU; native attention was used" in n
               for n in result.notices)
    assert np.array_equal(result.frames, plain)
