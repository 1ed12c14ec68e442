"""Memory profiles as data: how a pipeline is placed on a machine, and what each one needs.

A profile says what it offloads, tiles and stores in float8; `estimate` says how much GPU memory
and host RAM it needs for a variant at a size, computed from shapes (pipelines.memory), never
from loaded weights. `choose_profile(vram, ram, variant)` picks the fastest profile that fits a
machine; `check_profile` refuses, before anything loads, a profile the machine cannot hold.
The model manager applies the chosen profile with diffusers' own APIs (pipelines.placement).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .errors import ProfileError
from .memory import GIB, REAL_SHAPES, ModelShapes
from .variants import get_variant

PROFILE_ENV = "WAN_STUDIO_PROFILE"
VRAM_HEADROOM = 0.92  # of the card: the CUDA context, cuDNN workspaces and fragmentation take the rest
RAM_BASE = 3 * GIB  # Python, torch, the studio and the CUDA host context, before any weight

Offload = Literal["none", "model", "group", "group-disk"]


@dataclass(frozen=True)
class Profile:
    """One way to place a pipeline: device, precision, offload, VAE tiling, float8 storage."""

    name: str
    summary: str  # what it does, for a picker and the docs
    device: Literal["cuda", "cpu"]
    dtype_name: Literal["bfloat16", "float32"]
    offload: Offload  # none: all resident; model: one component at a time; group: layer by layer
    vae_tiling: bool = False
    vae_slicing: bool = False
    fp8: bool = False  # experts' layers stored in float8 (torchao on SM89+, layerwise casting elsewhere)
    one_at_a_time: bool = False  # load one component, offload it to disk, then the next
    auto: bool = True  # considered by choose_profile

    @property
    def dtype(self) -> object:
        """The torch dtype of the transformers and text encoder."""
        import torch

        return getattr(torch, self.dtype_name)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("resident", "bf16, every component resident on the GPU: no transfers at all",
            "cuda", "bfloat16", "none"),
    Profile("80gb", "bf16, model offload (one component on the GPU at a time: one expert resident), "
            "VAE decoded whole", "cuda", "bfloat16", "model"),
    Profile("48gb", "bf16, model offload, VAE decoded in tiles", "cuda", "bfloat16", "model",
            vae_tiling=True),
    Profile("fp8", "experts stored in float8 and computed in bf16, model offload, VAE in tiles",
            "cuda", "bfloat16", "model", vae_tiling=True, fp8=True),
    Profile("24gb", "bf16, group offload of the transformers and text encoder layer by layer with "
            "CUDA streams, VAE in tiles and slices", "cuda", "bfloat16", "group", vae_tiling=True,
            vae_slicing=True),
    Profile("low-ram", "bf16, components loaded one at a time and group-offloaded to disk: the "
            "least host RAM, the slowest", "cuda", "bfloat16", "group-disk", vae_tiling=True,
            vae_slicing=True, one_at_a_time=True),
    Profile("zerogpu", "for ZeroGPU: experts in float8, everything placed on cuda at start-up so a "
            "GPU call only computes", "cuda", "bfloat16", "none", vae_tiling=True, fp8=True,
            auto=False),
    Profile("cpu", "float32, everything in place on the CPU", "cpu", "float32", "none"),
)}
AUTO_ORDER = ("resident", "80gb", "48gb", "fp8", "24gb", "low-ram")  # fastest first


def get_profile(name: str) -> Profile:
    """Look a profile up by name, or raise a ProfileError listing the names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"Unknown profile {name!r}; choose one of: {', '.join(PROFILES)}.") from None


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory and host RAM a profile needs for one take, with the stage peaks behind it."""

    vram_bytes: int
    ram_bytes: int
    stages: tuple[tuple[str, int], ...]  # (stage, GPU bytes): encode (text, and I2V's image), denoise, decode


def estimate(profile: Profile, variant_id: str, width: int | None = None, height: int | None = None,
             frames: int | None = None, shapes: ModelShapes | None = None) -> MemoryEstimate:
    """What `profile` needs for a take of `variant_id` (default: the official size and frames)."""
    from . import memory

    spec = get_variant(variant_id)
    width = width or spec.default_size[0]
    height = height or spec.default_size[1]
    frames = frames or spec.frames
    shapes = shapes or REAL_SHAPES[variant_id]
    dtype = profile.dtype_name
    w = memory.weight_bytes(shapes, dtype)
    expert = w.transformer_fp8 if profile.fp8 else w.transformer
    act = memory.transformer_peak(shapes, width, height, frames, dtype)
    text = memory.text_encoder_peak(shapes, dtype)
    tiles = (256, 192) if profile.vae_tiling else (None, None)
    decode = memory.vae_decode_peak(shapes, width, height, frames, *tiles)
    work = memory.working_bytes(shapes, width, height, frames)
    cast = w.largest_layer if profile.fp8 else 0  # layerwise casting upcasts one layer at a time
    condition = 0  # I2V encodes a whole-length video (the image, then black frames) once
    if spec.image_input == "required":
        video = 3 * frames * height * width * 4
        condition = video + memory.vae_encode_peak(shapes, width, height, frames,
                                                   256 if profile.vae_tiling else None)

    if profile.device == "cpu":
        stages = (("encode", 0), ("denoise", 0), ("decode", 0))
        ram = w.total + max(text, act, decode, condition) + work
        return MemoryEstimate(0, ram + RAM_BASE, stages)
    if profile.offload == "none":
        resident = w.text_encoder + expert * w.experts + w.vae + work
        stages = (("encode", resident + max(text, condition)), ("denoise", resident + act + cast),
                  ("decode", resident + decode))
        ram = w.total  # from_pretrained reads into host memory before the move to the GPU
    elif profile.offload == "model":
        stages = (("encode", max(w.text_encoder + text, w.vae + condition) + work),
                  ("denoise", expert + act + cast + work), ("decode", w.vae + decode + work))
        ram = w.text_encoder + expert * w.experts + w.vae
        if profile.fp8:
            ram += w.transformer - expert  # one expert is cast to float8 after loading in bf16
    else:  # group offload: two layers in flight (with streams, the next is prefetched); VAE stays
        stages = (("encode", max(2 * w.text_encoder_largest_layer + text, condition) + w.vae + work),
                  ("denoise", 2 * w.largest_layer + w.unmatched + act + w.vae + work),
                  ("decode", w.vae + decode + work))
        if profile.offload == "group-disk":
            ram = max(w.transformer, w.text_encoder) + w.vae  # one component in memory at a time
        else:
            ram = w.total  # pinned host copies of every layer
    return MemoryEstimate(max(b for _, b in stages), ram + RAM_BASE, stages)


def choose_profile(vram_bytes: int, ram_bytes: int, variant_id: str,
                   shapes: ModelShapes | None = None) -> Profile:
    """The fastest profile whose estimate at the variant's official size fits this machine.

    `vram_bytes` 0 means no GPU: the "cpu" profile. `shapes` defaults to the official model
    sizes; pass a weights folder's own (`ModelShapes.from_folder`) for other weights. Raises
    ProfileError, saying what the lightest profile would need, when none fits.
    """
    if vram_bytes <= 0:
        profile = PROFILES["cpu"]
        check_profile(profile, variant_id, ram_bytes, 0, shapes=shapes)
        return profile
    for name in AUTO_ORDER:
        profile = PROFILES[name]
        need = estimate(profile, variant_id, shapes=shapes)
        if need.vram_bytes <= vram_bytes * VRAM_HEADROOM and need.ram_bytes <= ram_bytes:
            return profile
    lightest = estimate(PROFILES[AUTO_ORDER[-1]], variant_id, shapes=shapes)
    raise ProfileError(
        f"No memory profile fits {variant_id} on this machine ({_gib(vram_bytes)} GPU, "
        f"{_gib(ram_bytes)} RAM): the lightest, {AUTO_ORDER[-1]}, needs about "
        f"{_gib(lightest.vram_bytes / VRAM_HEADROOM)} GPU and {_gib(lightest.ram_bytes)} RAM; use a "
        "bigger machine or a smaller variant.")


def check_profile(profile: Profile, variant_id: str, ram_bytes: int, vram_bytes: int | None = None,
                  shapes: ModelShapes | None = None) -> None:
    """Refuse, before loading, a profile needing more host RAM (or GPU memory) than the machine has."""
    need = estimate(profile, variant_id, shapes=shapes)
    if need.ram_bytes > ram_bytes:
        fix = (f"pick a profile that needs less (--profile low-ram, or {PROFILE_ENV}=low-ram) or a "
               "machine with more RAM" if profile.device == "cuda" else
               "run these weights on a GPU, or use smaller weights (the demo weights) on this machine")
        raise ProfileError(
            f"The {profile.name} profile needs about {_gib(need.ram_bytes)} of host RAM for "
            f"{variant_id} and this machine has {_gib(ram_bytes)}; {fix}.")
    if vram_bytes and profile.device == "cuda" and need.vram_bytes > vram_bytes:
        raise ProfileError(
            f"The {profile.name} profile needs about {_gib(need.vram_bytes)} of GPU memory for "
            f"{variant_id} at {'x'.join(map(str, get_variant(variant_id).default_size))} and this "
            f"GPU has {_gib(vram_bytes)}; pick a lighter profile (--profile 24gb, or "
            f"{PROFILE_ENV}=24gb).")


def machine_memory(device: str | None = None) -> tuple[int, int]:
    """(GPU memory of the CUDA device, or 0 when there is none or it cannot be read; host RAM)."""
    import torch

    vram = 0
    if (device is None or device.startswith("cuda")) and torch.cuda.is_available():
        index = torch.device(device or "cuda").index or 0
        try:
            vram = int(torch.cuda.get_device_properties(index).total_memory)
        except (RuntimeError, AssertionError):  # e.g. ZeroGPU's emulated device outside a GPU call
            vram = 0
    return vram, host_ram()


def host_ram() -> int:
    """Total host RAM in bytes, lowered to the cgroup memory limit when one is set (containers)."""
    try:
        import psutil

        ram = int(psutil.virtual_memory().total)
    except ImportError:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit():
            ram = min(ram, int(text))
    return ram


def _gib(value: float) -> str:
    return f"{value / GIB:.0f} GiB" if value >= 10 * GIB else f"{value / GIB:.1f} GiB"
