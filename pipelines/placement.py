"""Load a pipeline and place it as a memory profile says, with diffusers' own APIs.

- "none": `pipe.to(device)`; "model": `enable_model_cpu_offload` (applied per pipeline by the
  manager, since the text and image pipelines of TI2V-5B take turns); "group" and "group-disk":
  `pipe.enable_group_offload(onload_device, offload_device="cpu", offload_type="leaf_level",
  use_stream=True)` on everything but the VAE, to disk with `offload_to_disk_path`.
- float8: torchao's `Float8DynamicActivationFloat8WeightConfig` through `PipelineQuantizationConfig`
  on GPUs with float8 matmuls (SM 8.9 and later) when torchao is installed, otherwise
  `enable_layerwise_casting(storage_dtype=float8_e4m3fn, compute_dtype=bfloat16)`, which stores
  float8 and computes bf16 on any device.
- VAE: `enable_tiling()` / `enable_slicing()`; the VAE is always float32.
- low host RAM ("one_at_a_time"): each component is loaded alone and offloaded to disk before the
  next one loads, so host memory holds one component at a time.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from .errors import WeightsError
from .profiles import Profile
from .variants import VariantSpec

log = logging.getLogger(__name__)

LOAD_ERRORS = (OSError, ValueError, RuntimeError, EnvironmentError)


def fp8_method(profile: Profile, device: str) -> str | None:
    """How this machine stores float8 weights for `profile`: "torchao", "layerwise" or None."""
    if not profile.fp8:
        return None
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and importlib.util.find_spec("torchao"):
        index = torch.device(device).index or 0
        try:
            capability = torch.cuda.get_device_capability(index)
        except (RuntimeError, AssertionError):  # ZeroGPU's emulated device outside a GPU call
            capability = (0, 0)
        if capability >= (8, 9):  # float8 tensor cores
            return "torchao"
    return "layerwise"


def load_pipeline(folder: Path, spec: VariantSpec, profile: Profile, device: str,
                  offload_dir: Path) -> tuple[Any, list[str]]:
    """Load the variant's pipeline from a checked folder and place it; returns (pipe, notes)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKLWan

    pipeline_class = getattr(diffusers, spec.pipeline_class)
    method = fp8_method(profile, device)
    experts = ["transformer", "transformer_2"] if spec.experts == 2 else ["transformer"]
    try:
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
        if profile.one_at_a_time:
            pipe = _load_one_at_a_time(folder, pipeline_class, vae, profile, device, offload_dir, experts)
        else:
            kwargs: dict[str, Any] = {}
            if method == "torchao":
                kwargs["quantization_config"] = _torchao_fp8(experts)
            pipe = pipeline_class.from_pretrained(folder, vae=vae, dtype=profile.dtype, **kwargs)
    except LOAD_ERRORS as exc:
        raise WeightsError(f"The weights at {folder} could not be loaded: {exc}") from None
    notes = place_pipeline(pipe, spec, profile, device, offload_dir, quantized=method == "torchao")
    return pipe, notes


def place_pipeline(pipe: Any, spec: VariantSpec, profile: Profile, device: str, offload_dir: Path,
                   quantized: bool = False) -> list[str]:
    """Apply a profile to a pipeline already in memory (float8, offload, VAE tiling); returns notes.

    Model offload is left to the caller (the manager hooks whichever pipeline runs). `quantized`
    says torchao already quantized the experts while loading.
    """
    import torch

    method = fp8_method(profile, device)
    notes: list[str] = []
    experts = ["transformer", "transformer_2"] if spec.experts == 2 else ["transformer"]
    if method == "torchao" and not quantized:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

        for name in experts:
            quantize_(getattr(pipe, name), Float8DynamicActivationFloat8WeightConfig())
    if method == "layerwise":
        for name in experts:
            getattr(pipe, name).enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                         compute_dtype=profile.dtype)
        if device.startswith("cuda"):
            notes.append("float8 weights by layerwise casting (float8 matmuls need torchao and an "
                         "SM 8.9+ GPU)")
    elif method == "torchao":
        notes.append("float8 weights and matmuls by torchao")
    if profile.offload == "none":
        pipe.to(device)
    elif profile.offload in ("group", "group-disk") and not profile.one_at_a_time:
        _group_offload(pipe, profile, device, offload_dir)
    if profile.vae_tiling:
        pipe.vae.enable_tiling()
    if profile.vae_slicing:
        pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return notes


def _torchao_fp8(experts: list[str]) -> Any:
    """A PipelineQuantizationConfig quantizing the experts to float8 with torchao."""
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

    config = TorchAoConfig(Float8DynamicActivationFloat8WeightConfig())
    return PipelineQuantizationConfig(quant_mapping={name: config for name in experts})


def _group_kwargs(profile: Profile, device: str, offload_dir: Path) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = dict(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="leaf_level")
    if device.startswith("cuda"):  # streams prefetch the next layer while this one computes
        kwargs.update(use_stream=True)
    if profile.offload == "group-disk":
        kwargs["offload_to_disk_path"] = str(offload_dir)
    return kwargs


def _group_offload(pipe: Any, profile: Profile, device: str, offload_dir: Path) -> None:
    """Group offload everything but the VAE, which stays on the device (it is small, and tiled)."""
    pipe.enable_group_offload(**_group_kwargs(profile, device, offload_dir), exclude_modules=["vae"])
    pipe.vae.to(device)


def _load_one_at_a_time(folder: Path, pipeline_class: Any, vae: Any, profile: Profile, device: str,
                        offload_dir: Path, experts: list[str]) -> Any:
    """Load each big component alone and group-offload it (to disk) before loading the next."""
    from diffusers import WanTransformer3DModel
    from diffusers.hooks import apply_group_offloading
    from transformers import AutoTokenizer, UMT5EncoderModel

    kwargs = _group_kwargs(profile, device, offload_dir)
    parts: dict[str, Any] = {}
    encoder = UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=profile.dtype)
    # Only the encoder stack: `shared` and `encoder.embed_tokens` are two modules tying one
    # weight, and disk offload of both writes the second file after the first emptied the weight.
    apply_group_offloading(encoder.encoder, **{**kwargs, "offload_to_disk_path": _sub(kwargs, "text_encoder")})
    parts["text_encoder"] = encoder
    for name in experts:
        model = WanTransformer3DModel.from_pretrained(folder, subfolder=name, dtype=profile.dtype)
        model.enable_group_offload(**{**kwargs, "offload_to_disk_path": _sub(kwargs, name)})
        parts[name] = model  # its weights now live on disk: host memory is free for the next one
    parts["tokenizer"] = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler_class = _scheduler_class(folder)
    parts["scheduler"] = scheduler_class.from_pretrained(folder, subfolder="scheduler")
    index = _model_index(folder)
    extra = {k: index[k] for k in ("boundary_ratio", "expand_timesteps") if k in index}
    pipe = pipeline_class(vae=vae.to(device), **parts, **extra)
    return pipe


def _sub(kwargs: dict[str, Any], name: str) -> str | None:
    base = kwargs.get("offload_to_disk_path")
    return str(Path(base) / name) if base else None


def _model_index(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))


def _scheduler_class(folder: Path) -> Any:
    import diffusers

    name = _model_index(folder).get("scheduler", [None, "UniPCMultistepScheduler"])[1]
    return getattr(diffusers, name)
