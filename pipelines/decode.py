"""Final latents -> frames, with a retry ladder for out-of-memory, and latents kept on disk.

The engine runs diffusers with `output_type="latent"` and decodes here exactly as the pipeline
would (latents / latents_std + latents_mean, `vae.decode`, `video_processor.postprocess_video`).
Decoding is a separate stage so a finished denoise is never thrown away: on an out-of-memory error
the decode is retried tiled, then tiled with smaller tiles; if that fails too, the latents travel
with the failure (`DecodeFailed.latents`, `FailedEvent.latents`) and can be saved
(`save_latents`) and decoded again later (`Engine.decode_again`).
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import StudioError

log = logging.getLogger(__name__)

LATENTS_FORMAT = "wan-studio-latents/1"
SETTINGS_HINT = "a lower-memory profile (--profile 24gb, or WAN_STUDIO_PROFILE=24gb for the studio)"


@dataclass(frozen=True)
class Tiles:
    """VAE tile sizes in pixels (diffusers' `enable_tiling` arguments)."""

    min_side: int
    stride: int

    def describe(self) -> str:
        """Tiles as a user reads them."""
        return f"{self.min_side} px tiles"


# None: as the profile set the VAE up; then diffusers' default tiles; then smaller ones.
DECODE_LADDER: tuple[Tiles | None, ...] = (None, Tiles(256, 192), Tiles(128, 96))


class DecodeFailed(StudioError):
    """Decoding failed after denoising; `latents` (CPU tensor) can be decoded again later."""

    def __init__(self, message: str, latents: Any) -> None:
        super().__init__(message)
        self.latents = latents


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an accelerator (or host) out-of-memory error."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Return cached accelerator memory after a failed allocation."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def denormalize(vae: Any, latents: Any) -> Any:
    """Latents in the VAE's own space, on its execution device and dtype, as diffusers does it."""
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    latents = latents.to(get_module_execution_device(vae), dtype=vae.dtype)
    config = vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return latents / std + mean


def decode_latents(pipe: Any, latents: Any, where: str,
                   notice: Callable[[str], None] = lambda text: None) -> Any:
    """Decode final latents to float frames in [0, 1] (numpy, batch first), retrying on OOM.

    `where` describes the take for messages ("1280x704, 121 frames"). The VAE's tiling settings
    are restored afterwards, so a retry in tiles does not change the next take. Raises
    DecodeFailed carrying the latents (on the CPU) when every rung of the ladder failed.
    """
    import torch

    kept = latents.detach().to("cpu")
    vae = pipe.vae
    saved = (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_min_width,
             vae.tile_sample_stride_height, vae.tile_sample_stride_width)
    try:
        for rung, tiles in enumerate(DECODE_LADDER):
            if tiles is not None:
                if saved[0] and saved[1] <= tiles.min_side:
                    continue  # the profile's tiles are already this small
                vae.enable_tiling(tile_sample_min_height=tiles.min_side,
                                  tile_sample_min_width=tiles.min_side,
                                  tile_sample_stride_height=tiles.stride,
                                  tile_sample_stride_width=tiles.stride)
            frames = None
            try:
                with torch.no_grad():
                    video = vae.decode(denormalize(vae, kept), return_dict=False)[0]
                    frames = pipe.video_processor.postprocess_video(video, output_type="np")
                    del video
            except Exception as exc:  # noqa: BLE001 - any failure keeps the latents
                if not is_out_of_memory(exc):
                    raise DecodeFailed(f"Decoding failed ({type(exc).__name__}: {exc}); the denoised "
                                       "result is kept and can be decoded again.", kept) from exc
                log.warning("VAE decode out of memory at %s (rung %d): %s", where, rung, exc)
            if frames is None:
                # outside the except block, so the failed attempt's traceback (and the activations
                # its frames hold) is gone before the cache is emptied
                free_memory()
                continue
            if tiles is not None:
                notice(f"The VAE ran out of memory decoding {where} in one piece; it was decoded in "
                       f"{tiles.describe()} instead.")
            return frames
    finally:
        vae.use_tiling = saved[0]
        (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_sample_stride_height,
         vae.tile_sample_stride_width) = saved[1:]
    raise DecodeFailed(
        f"Decoding ran out of memory at {where}, even in {DECODE_LADDER[-1].describe()}; the "
        f"denoised result is kept: decode it again once memory is free, or use {SETTINGS_HINT}.",
        kept)


def latent_shape(vae_z_dim: int, spatial_stride: int, width: int, height: int,
                 frames: int) -> tuple[int, int, int, int, int]:
    """The shape of a take's final latents: (1, z, latent frames, height / s, width / s)."""
    return (1, vae_z_dim, (frames - 1) // 4 + 1, height // spatial_stride, width // spatial_stride)


def save_latents(path: str | Path, latents: Any, request_json: str) -> Path:
    """Write final latents and the request that made them to a .safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.detach().to("cpu").contiguous()}, str(path),
              metadata={"format": LATENTS_FORMAT, "request": request_json})
    return path


def load_latents(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a file written by `save_latents`: (latents, the request as a dict)."""
    from safetensors import safe_open

    from .errors import WeightsError
    from .loader import check_safetensors

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"No latents file at {path}.")
    try:
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != LATENTS_FORMAT or "latents" not in handle.keys():
                raise StudioError(f"{path.name} is not a latents file saved by the studio.")
            return handle.get_tensor("latents"), json.loads(metadata["request"])
    except WeightsError:
        raise StudioError(f"The latents file {path.name} is damaged or truncated; it cannot be "
                          "decoded again.") from None
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"The latents file {path.name} could not be read ({exc}).") from None
