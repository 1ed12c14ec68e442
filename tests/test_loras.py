"""LoRAs on the tiny experts: every key format, the right expert, clean unloads, bad files refused."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from lora_files import (write_diffusers, write_musubi, write_other_architecture, write_partial,
                        write_wan)
from pipelines.engine import Engine
from pipelines.events import FailedEvent, StepEvent
from pipelines.loras import LoraError, list_loras, resolve_lora_source
from pipelines.manager import ModelManager
from pipelines.request import build_request


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    write_diffusers(root / "style.safetensors", seed=1)
    write_wan(root / "style_comfy.safetensors", seed=1)  # the same weights, ComfyUI keys
    write_musubi(root / "style_musubi.safetensors", seed=1)  # and musubi keys
    write_diffusers(root / "other.safetensors", seed=2)
    write_wan(root / "bias_on_attention_only.safetensors", seed=3, diff_b="attention")
    (root / "pairs").mkdir()
    write_diffusers(root / "pairs" / "high.safetensors", seed=4)
    write_diffusers(root / "pairs" / "low.safetensors", seed=5)
    write_diffusers(root / "another_size.safetensors", seed=6, dim=48, ffn=64)
    write_other_architecture(root / "flux_style.safetensors")
    write_partial(root / "deeper_model.safetensors", seed=7)
    data = (root / "style.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) - 64])
    return root


@pytest.fixture(scope="module")
def engine(tiny_weights, folder, tmp_path_factory):
    manager = ModelManager({k: str(tiny_weights[k]) for k in ("t2v-a14b", "ti2v-5b")},
                           tmp_path_factory.mktemp("lora-cache"), device="cpu", demo_dir=None,
                           lora_dir=folder)
    return Engine(manager)


def take(engine, loras=(), variant="t2v-a14b", **raw):
    request = build_request(dict(variant=variant, prompt="a red ball rolls across a meadow",
                                 width=64, height=64, frames=5, steps=4, seed=3, guidance=1.0,
                                 guidance_low=1.0 if variant == "t2v-a14b" else None,
                                 flow_shift=5.0, preview={"enabled": False}, loras=list(loras),
                                 **raw)).request
    events = []
    result = engine.generate(request, events.append)
    return result, events


@pytest.fixture(scope="module")
def plain(engine):
    result, events = take(engine)
    assert {e.expert for e in events if isinstance(e, StepEvent)} == {"high-noise", "low-noise"}
    return result.frames


def peft_layers(model):
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]


def test_each_key_format_loads_the_same_weights_and_unloads_cleanly(engine, plain):
    results = {}
    for name in ("style", "style_comfy.safetensors", "style_musubi.safetensors"):
        result, _ = take(engine, [f"{name}:1.0"])
        results[name] = result.frames
    assert not np.array_equal(results["style"], plain)  # the LoRA does something
    # alpha equal to the rank: ComfyUI and musubi files mean exactly the diffusers weights
    assert np.array_equal(results["style_comfy.safetensors"], results["style"])
    assert np.array_equal(results["style_musubi.safetensors"], results["style"])
    again, _ = take(engine)  # a plain take after LoRA takes
    assert np.array_equal(again.frames, plain)
    pipe = engine.manager.get("t2v-a14b").pipe
    assert peft_layers(pipe.transformer) == [] and peft_layers(pipe.transformer_2) == []


def test_a_lora_reaches_only_the_expert_it_is_for(engine, plain):
    pipe = engine.manager.get("t2v-a14b").pipe
    high, _ = take(engine, ["pairs/high.safetensors:high=1,low=0"])
    assert peft_layers(pipe.transformer) and peft_layers(pipe.transformer_2) == []
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [module.register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
             for name in calls for module in getattr(pipe, name).modules() if hasattr(module, "lora_A")]
    try:
        again, _ = take(engine, ["pairs/high.safetensors:high=1,low=0"])  # adapters stay loaded
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["transformer"] > 0 and calls["transformer_2"] == 0
    assert np.array_equal(again.frames, high.frames)
    assert (high.loras[0].high, high.loras[0].low) == (1.0, 0.0)
    low, _ = take(engine, ["pairs/low.safetensors:high=0,low=1"])
    assert peft_layers(pipe.transformer) == [] and peft_layers(pipe.transformer_2)
    assert not np.array_equal(high.frames, low.frames) and not np.array_equal(low.frames, plain)


def test_a_high_low_pair_switches_between_takes_without_reloading(engine, plain):
    state = engine.manager.get("t2v-a14b").loras
    pair = ["pairs/high.safetensors:high=1.5,low=0", "pairs/low.safetensors:high=0,low=1"]
    first, _ = take(engine, pair)
    adapters = {k: set(v) for k, v in state.loaded_adapters.items()}
    assert len(adapters["transformer"]) == 1 and len(adapters["transformer_2"]) == 1
    weaker, _ = take(engine, ["pairs/high.safetensors:high=0.5,low=0", "pairs/low.safetensors:high=0,low=1"])
    assert {k: set(v) for k, v in state.loaded_adapters.items()} == adapters  # strengths only
    assert not np.array_equal(first.frames, weaker.frames)
    again, _ = take(engine, pair)
    assert np.array_equal(again.frames, first.frames)
    high_file = engine.manager.lora_dir / "pairs" / "high.safetensors"
    assert [(r.name, r.sha256, r.high, r.low) for r in again.loras] == [
        ("pairs/high.safetensors", hashlib.sha256(high_file.read_bytes()).hexdigest(), 1.5, 0.0),
        ("pairs/low.safetensors", again.loras[1].sha256, 0.0, 1.0)]
    other, _ = take(engine, ["other"])  # another LoRA: the pair's adapters are deleted
    assert all(len(v) == 1 for v in state.loaded_adapters.values())
    assert np.array_equal(take(engine)[0].frames, plain)


def test_a_file_with_diff_b_on_attention_only_loads(engine, plain):
    """Bias on some layers only used to leave the others on the meta device (diffusers/PEFT)."""
    result, _ = take(engine, ["bias_on_attention_only.safetensors"])
    assert not np.array_equal(result.frames, plain)
    assert np.array_equal(take(engine)[0].frames, plain)


BAD_FILES = [
    ("another_size.safetensors", "was made for a model of another size"),
    ("flux_style.safetensors", "does not fit the high-noise expert of t2v-a14b"),
    ("deeper_model.safetensors", "only partly matches the high-noise expert of t2v-a14b: 20 of its 40"),
    ("truncated.safetensors", "is damaged or truncated"),
    ("missing.safetensors", "No LoRA file 'missing.safetensors'"),
]


def weights(pipe):
    return {f"{expert}.{k}": v.clone() for expert in ("transformer", "transformer_2")
            for k, v in getattr(pipe, expert).state_dict().items()}


def test_bad_files_are_one_sentence_and_leave_the_pipeline_as_it_was(engine, plain):
    import torch

    pipe = engine.manager.get("t2v-a14b").pipe
    take(engine)
    before = weights(pipe)
    for name, words in BAD_FILES:
        events = []
        request = build_request(dict(variant="t2v-a14b", prompt="a red ball rolls across a meadow",
                                     width=64, height=64, frames=5, steps=4, seed=3, guidance=1.0,
                                     guidance_low=1.0, flow_shift=5.0, preview={"enabled": False},
                                     loras=["style", name])).request  # a good one first
        with pytest.raises(LoraError) as info:
            engine.generate(request, events.append)
        message = str(info.value)
        assert words in message and "\n" not in message, message
        assert isinstance(events[-1], FailedEvent) and events[-1].message == message
        assert not any(isinstance(e, StepEvent) for e in events)  # refused before denoising
        after = weights(pipe)  # no adapter, no PEFT layer, not a bit of a weight changed
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert np.array_equal(take(engine)[0].frames, plain)


def test_single_expert_ti2v_takes_the_high_strength(engine):
    plain_ti2v, _ = take(engine, variant="ti2v-5b")
    with_lora, _ = take(engine, ["style:high=0.8,low=0.8"], variant="ti2v-5b")
    assert not np.array_equal(with_lora.frames, plain_ti2v.frames)
    assert with_lora.loras[0].high == 0.8
    assert np.array_equal(take(engine, variant="ti2v-5b")[0].frames, plain_ti2v.frames)


def test_a_preset_loads_its_pair_from_the_preset_source(engine, folder, tmp_path):
    source = tmp_path / "lightning"
    source.mkdir()
    shutil.copy(folder / "pairs" / "high.safetensors",
                source / "Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors")
    engine.manager.preset_source = str(source)
    try:
        with pytest.raises(LoraError, match="needs Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16"):
            take(engine, preset="t2v-lightning-4step")
        shutil.copy(folder / "pairs" / "low.safetensors",
                    source / "Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors")
        request = build_request(dict(variant="t2v-a14b", prompt="a red ball", width=64, height=64,
                                     frames=5, seed=3, preset="t2v-lightning-4step",
                                     preview={"enabled": False})).request
        assert (request.steps, request.guidance, request.guidance_low) == (4, 1.0, 1.0)
        result = engine.generate(request)
    finally:
        engine.manager.preset_source = None
    assert result.preset == "t2v-lightning-4step"
    assert [(r.high, r.low) for r in result.loras] == [(1.0, 0.0), (0.0, 1.0)]
    assert result.loras[0].name == "Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors"


def test_lora_listing_and_sources(folder, tmp_path, monkeypatch):
    names = [f.name for f in list_loras(folder)]
    assert names == [f.name for f in ModelManager({}, tmp_path, demo_dir=None, lora_dir=folder).available_loras()]
    assert "pairs/high.safetensors" in names and names == sorted(names, key=str.lower)
    assert list_loras(tmp_path / "none") == []
    assert resolve_lora_source("style", folder, tmp_path)[1] == folder / "style.safetensors"
    assert resolve_lora_source(str(folder / "pairs" / "low.safetensors"), None, tmp_path)[0] == "low.safetensors"
    # a Hub id served from the local cache while offline, as weights are
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    revision = "1" * 40
    repo = tmp_path / "hub" / "models--someone--wan-loras"
    (repo / "snapshots" / revision / "sub").mkdir(parents=True)
    shutil.copy(folder / "style.safetensors", repo / "snapshots" / revision / "sub" / "x.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    name, path = resolve_lora_source("someone/wan-loras/sub/x.safetensors", None, tmp_path / "hub")
    assert name == "someone/wan-loras/sub/x.safetensors" and path.read_bytes() == (
        folder / "style.safetensors").read_bytes()
    with pytest.raises(LoraError, match="not in the local Hub cache and the studio is offline"):
        resolve_lora_source("someone/other-loras/y.safetensors", None, tmp_path / "hub")
