"""Weights resolution and checks: every broken source gets one clear sentence."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.errors import WeightsError
from pipelines.loader import check_variant, inspect_folder, resolve_source
from pipelines.manager import ModelManager
from pipelines.variants import get_variant


def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


@pytest.mark.parametrize("variant", ["t2v-a14b", "i2v-a14b", "ti2v-5b"])
def test_each_tiny_folder_is_recognised(tiny_weights, variant):
    info = inspect_folder(tiny_weights[variant])
    assert info.variant_id == variant
    check_variant(info, get_variant(variant))


def test_mismatch_names_both_variants(tiny_weights):
    info = inspect_folder(tiny_weights["i2v-a14b"])
    with pytest.raises(WeightsError) as err:
        check_variant(info, get_variant("t2v-a14b"))
    assert "hold i2v-a14b" in str(err.value) and "given for t2v-a14b" in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(WeightsError, match="No weights folder at"):
        inspect_folder(tmp_path / "nowhere")
    with pytest.raises(WeightsError, match="No weights folder at"):
        resolve_source(str(tmp_path / "nowhere"), tmp_path / "cache")


def test_folder_without_model_index(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="model_index.json is missing"):
        inspect_folder(tmp_path / "empty")


def test_missing_component(tiny_weights, tmp_path):
    folder = copy(tiny_weights["t2v-a14b"], tmp_path)
    shutil.rmtree(folder / "transformer_2")
    with pytest.raises(WeightsError, match="'transformer_2' .* is missing"):
        inspect_folder(folder)


def test_truncated_safetensors(tiny_weights, tmp_path):
    folder = copy(tiny_weights["ti2v-5b"], tmp_path)
    weights = next((folder / "transformer").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightsError, match="truncated"):
        inspect_folder(folder)


def test_garbage_safetensors(tiny_weights, tmp_path):
    folder = copy(tiny_weights["ti2v-5b"], tmp_path)
    weights = next((folder / "vae").glob("*.safetensors"))
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="damaged or truncated"):
        inspect_folder(folder)


def test_wan21_style_folder_is_not_a_wan22_variant(tiny_weights, tmp_path):
    folder = copy(tiny_weights["t2v-a14b"], tmp_path)
    shutil.rmtree(folder / "transformer_2")
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer_2"] = [None, None]
    index["boundary_ratio"] = None
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="single-expert Wan2.1-style"):
        inspect_folder(folder)


def test_unknown_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not in the local cache .* offline"):
        resolve_source("Wan-AI/Wan2.2-TI2V-5B-Diffusers", tmp_path / "cache")


def test_hub_id_served_from_the_local_cache_offline(tiny_weights, tmp_path, monkeypatch):
    """A Hub id whose snapshot is already cached resolves offline through from_pretrained's cache."""
    repo, revision = "wan-studio-tests/tiny-ti2v", "0" * 40
    cache = tmp_path / "cache"
    snapshot = cache / "models--wan-studio-tests--tiny-ti2v" / "snapshots" / revision
    shutil.copytree(tiny_weights["ti2v-5b"], snapshot)
    (cache / "models--wan-studio-tests--tiny-ti2v" / "refs").mkdir()
    (cache / "models--wan-studio-tests--tiny-ti2v" / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_source(repo, cache)
    assert inspect_folder(folder).variant_id == "ti2v-5b"


def test_manager_refuses_unknown_variant_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="Unknown variant"):
        ModelManager({"wan-3": "x"}, tmp_path, demo_dir=None)
    manager = ModelManager({}, tmp_path, demo_dir=None)
    assert manager.available() == []
    with pytest.raises(WeightsError, match="--weights t2v-a14b="):
        manager.get("t2v-a14b")


def test_manager_keeps_one_pipeline_and_reads_folder_defaults(tiny_weights, tmp_path):
    folder = copy(tiny_weights["ti2v-5b"], tmp_path)
    (folder / "studio.json").write_text(json.dumps(
        {"demo": True, "defaults": {"width": 96, "height": 64, "frames": 17, "fps": 12}}))
    manager = ModelManager({"ti2v-5b": str(folder), "t2v-a14b": str(tiny_weights["t2v-a14b"])},
                           tmp_path / "cache", demo_dir=None)
    defaults = manager.defaults_for("ti2v-5b")
    assert (defaults.width, defaults.height, defaults.frames, defaults.fps) == (96, 64, 17, 12)
    assert defaults.steps == 50  # not declared: official value stays
    assert manager.is_demo("ti2v-5b") and not manager.is_demo("t2v-a14b")
    first = manager.get("ti2v-5b")
    assert manager.get("ti2v-5b") is first
    second = manager.get("t2v-a14b")
    assert manager.loaded_variant() == "t2v-a14b" and first.pipe is None and second.pipe is not None


def test_manager_refuses_weights_given_for_the_wrong_variant(tiny_weights, tmp_path):
    manager = ModelManager({"t2v-a14b": str(tiny_weights["ti2v-5b"])}, tmp_path, demo_dir=None)
    with pytest.raises(WeightsError, match="hold ti2v-5b, but they were given for t2v-a14b"):
        manager.get("t2v-a14b")


def test_the_cpu_gets_the_cpu_profile_and_a_named_gpu_profile_is_refused(tiny_weights, tmp_path):
    from pipelines.errors import ProfileError

    manager = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])}, tmp_path, device="cpu",
                           demo_dir=None)
    assert manager.profile_for("t2v-a14b").name == "cpu" and manager.device() == "cpu"
    gpu = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])}, tmp_path, device="cpu",
                       demo_dir=None, profile="48gb")
    with pytest.raises(ProfileError, match="The 48gb profile needs a CUDA GPU"):
        gpu.get("t2v-a14b")


def test_cpu_load_is_float32_in_place(tiny_weights, tmp_path):
    import torch

    manager = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])}, tmp_path, device="cpu",
                           demo_dir=None)
    pipe = manager.get("t2v-a14b").pipe
    for module in (pipe.transformer, pipe.transformer_2, pipe.text_encoder, pipe.vae):
        assert next(module.parameters()).dtype == torch.float32
        assert next(module.parameters()).device.type == "cpu"
