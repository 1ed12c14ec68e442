"""Live previews from the denoising loop: x0 capture, a fitted latent->RGB map, preview frames.

- `capture_x0(scheduler)` wraps `scheduler.step` and computes each step's clean-sample estimate
  `x0 = x_t - sigma * v` (flow matching), for any diffusers flow scheduler.
- `load_or_fit_projection(vae, cache)` fits a linear map from the pipeline's normalized latent
  space to RGB by least squares against the VAE itself (synthetic clips encoded, then decoded),
  and caches it as safetensors keyed by a fingerprint of the VAE weights.
- `calibrate_projection(projection, vae, x0)` refits that map to one run, on the VAE's decode of
  the run's first latent frame; the engine does it half-way through a run and at its last step.
- `preview_frames(projection, x0)` turns latents into small uint8 frames: ONE IMAGE PER LATENT
  FRAME (21 for 81 video frames, 31 for 121), which is what the latents hold and is cheap; play
  them at fps / temporal_stride. `decode_preview(vae, x0)` runs the real VAE instead (all video
  frames, full quality, slow) for the "decode every N steps" option.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

FIT_VERSION = 3  # bump when the calibration recipe changes, so cached maps are refitted
RIDGE = 0.01  # shrinkage, relative to the mean latent variance
CALIBRATION_PIXELS = 128  # side, in video pixels, of the first-frame patch decoded to calibrate a run
CALIBRATION_MARGIN = 2  # latent pixels next to a cut edge of that window, left out of the refit
CALIBRATION_PULL = 1.0  # how hard a run's refit is pulled towards the fitted map, per latent variance
CALIBRATION_SEED = 20250728
X0Callback = Callable[[int, float, torch.Tensor], None]


# --- x0 capture -------------------------------------------------------------------------------


@dataclass
class X0Capture:
    """The latest clean-sample estimate seen by a wrapped scheduler (float32, latent space)."""

    latest: torch.Tensor | None = None
    step_index: int | None = None
    sigma: float | None = None
    steps_seen: int = 0


@contextmanager
def capture_x0(scheduler: Any, on_x0: X0Callback | None = None) -> Iterator[X0Capture]:
    """Wrap `scheduler.step` so each step records x0 = sample - sigma * model_output.

    `on_x0(step_index, sigma, x0)` is called for every step; the wrapper is an instance attribute
    removed (or the previous one restored) on exit, so the scheduler is left as it was found.
    """
    _check_flow_scheduler(scheduler)
    capture = X0Capture()
    had_own = "step" in vars(scheduler)
    previous = vars(scheduler).get("step")
    original = scheduler.step

    def step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        index = _current_step_index(scheduler, timestep)
        sigma = float(scheduler.sigmas[index])
        with torch.no_grad():
            x0 = torch.sub(sample.float(), model_output.float(), alpha=sigma)
        capture.latest, capture.step_index, capture.sigma = x0, index, sigma
        capture.steps_seen += 1
        if on_x0 is not None:
            on_x0(index, sigma, x0)
        return original(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = step
    try:
        yield capture
    finally:
        if had_own:
            scheduler.step = previous
        else:
            del scheduler.step


def _check_flow_scheduler(scheduler: Any) -> None:
    name = type(scheduler).__name__
    if not hasattr(scheduler, "sigmas") or not hasattr(scheduler, "step"):
        raise TypeError(f"{name} has no sigmas; previews need a diffusers flow-matching scheduler.")
    prediction = getattr(scheduler.config, "prediction_type", "flow_prediction")
    if prediction != "flow_prediction":
        raise ValueError(f"{name} predicts {prediction!r}; previews need prediction_type='flow_prediction'.")


def _current_step_index(scheduler: Any, timestep: Any) -> int:
    """The index the scheduler is about to use, resolved the way its own `step` resolves it."""
    if scheduler.step_index is not None:
        return int(scheduler.step_index)
    if scheduler.begin_index is not None:
        return int(scheduler.begin_index)
    if isinstance(timestep, torch.Tensor):
        timestep = timestep.to(scheduler.timesteps.device)
    return int(scheduler.index_for_timestep(timestep))


# --- the latent -> RGB map --------------------------------------------------------------------


@dataclass(frozen=True)
class LatentRGBProjection:
    """rgb = latent @ weight + bias, per latent pixel; latents in the pipeline's normalized space, RGB in 0..1."""

    weight: torch.Tensor  # (C, 3)
    bias: torch.Tensor  # (3,)
    spatial_stride: int = 8  # video pixels per latent pixel along each side
    temporal_stride: int = 4  # video frames per latent frame after the first

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.weight.shape[1] != 3:
            raise ValueError(f"Projection weight must be (channels, 3), got {tuple(self.weight.shape)}.")
        if tuple(self.bias.shape) != (3,):
            raise ValueError(f"Projection bias must be (3,), got {tuple(self.bias.shape)}.")

    @property
    def channels(self) -> int:
        """Latent channels the map expects (16 for the Wan2.1 VAE, 48 for Wan2.2's)."""
        return int(self.weight.shape[0])

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (C, T, h, w) -> float RGB (T, 3, h, w) in 0..1, not clamped."""
        return self.project_scaled(latents, scale=1.0, offset=0.0).permute(1, 0, 2, 3)

    def project_scaled(self, latents: torch.Tensor, scale: float = 255.0, offset: float = 0.5) -> torch.Tensor:
        """Latents (C, T, h, w) -> (3, T, h, w) = scale * rgb + offset, in one matrix product."""
        channels, frames, h, w = latents.shape
        flat = latents.reshape(channels, -1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        weight = (self.weight.T * scale).to(flat.device, torch.float32)
        bias = (self.bias * scale + offset).to(flat.device, torch.float32)
        return torch.addmm(bias[:, None], weight, flat).view(3, frames, h, w)


def fit_projection(vae: Any, size: int = 96, images: int = 16, clips: int = 4,
                   frames: int = 5) -> LatentRGBProjection:
    """Fit the latent->RGB map by least squares: synthetic frames' latents against the VAE's decodes of them.

    Single images (cheap; the first latent frame) and a few short panning clips (the later latent
    frames, each covering `temporal_stride` frames) are encoded and decoded by `vae` itself; every
    latent pixel is paired with the mean RGB of the decoded pixels and frames it covers.
    """
    temporal = int(getattr(vae.config, "scale_factor_temporal", None) or 4)
    groups = [calibration_clips(size=size, count=images, frames=1),
              calibration_clips(size=size, count=clips, frames=frames, seed=CALIBRATION_SEED + 1)]
    xs, ys, spatial = [], [], 8
    for video in groups:
        if not len(video):
            continue
        z = _encode_normalized(vae, video)  # (N, C, t, h, w)
        spatial = size // z.shape[-1]
        # The target is what the preview stands in for: the VAE's decode of these latents, clamped
        # as the final video is, not the clip that was encoded. A small VAE reconstructs colours
        # outside what it was trained on poorly (saturated synthetic primaries), and a map fitted
        # to the inputs learns colours the decoder never produces: the demo's lavender skies.
        decoded = (_decode_normalized(vae, z).clamp_(-1, 1) + 1) / 2
        target = _block_means(decoded, spatial, z.shape[2], temporal)  # (N, 3, t, h, w)
        xs.append(z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1]).double())
        ys.append(target.permute(0, 2, 3, 4, 1).reshape(-1, 3).double())
    if not xs:
        raise ValueError("Fitting a preview map needs at least one calibration image or clip.")
    x, y = torch.cat(xs), torch.cat(ys)
    # ridge regression: latent directions the calibration barely spans get small weights, so a
    # generated latent that strays along them (a half-trained model's do) does not blow up the map
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    gram = xc.T @ xc / len(x)
    ridge = RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    weight = torch.linalg.solve(gram + ridge, xc.T @ (y - y_mean) / len(x))  # (C, 3)
    bias = y_mean - x_mean @ weight
    return LatentRGBProjection(weight.float().contiguous(), bias.float().contiguous(),
                               spatial_stride=spatial, temporal_stride=temporal)


def calibration_steps(total: int) -> tuple[int, ...]:
    """The steps (1-based) from which a run's map is recalibrated: half-way through, and the last."""
    return tuple(sorted({max(1, (total + 1) // 2), max(1, total)}))


def calibrate_projection(projection: LatentRGBProjection, vae: Any, latents: torch.Tensor,
                         window: int | None = None) -> LatentRGBProjection:
    """`projection` refitted to one run, towards itself, on the VAE's decode of the run's first latent frame.

    The fitted map is one linear map for every latent the VAE may see; a small VAE's decoder is far
    from linear, so the colours a given run's latents decode to drift from it by a cast that
    depends on the content (a night meadow differs from a desert noon). The causal Wan VAE decodes
    the first latent frame on its own, exactly as the final decode will, so decoding that frame
    alone (only a central `window` x `window` latent patch of a large one, by default
    CALIBRATION_PIXELS video pixels a side) is a small share of the final decode's work and gives
    exact targets for this run's colours. Failures leave the map as it was.
    """
    # Under model offload the VAE decodes on the CPU mid-run (see _run_vae): the real Wan2.2 VAE
    # took 8-10 s on 2 shared cores for 128x128 pixels, 25-32 s for 256x256.
    window = window or max(2 * CALIBRATION_MARGIN + 2, CALIBRATION_PIXELS // projection.spatial_stride)
    try:
        return _calibrated(projection, vae, _single_latents(latents, projection.channels), window)
    except Exception as exc:  # noqa: BLE001 - a preview nicety must never end a run
        logger.warning("Preview map not recalibrated for this run (%s: %s).", type(exc).__name__, exc)
        return projection


def _calibrated(projection: LatentRGBProjection, vae: Any, latents: torch.Tensor,
                window: int) -> LatentRGBProjection:
    _, _, h, w = latents.shape
    wh, ww = min(h, window), min(w, window)
    top, left = (h - wh) // 2, (w - ww) // 2
    patch = latents[:, :1, top:top + wh, left:left + ww].float().cpu()  # (C, 1, wh, ww)
    decoded = (_decode_normalized(vae, patch[None]).clamp_(-1, 1) + 1) / 2  # (1, 3, 1, H, W)
    stride = projection.spatial_stride
    if tuple(decoded.shape[-2:]) != (wh * stride, ww * stride):
        raise ValueError(f"the VAE decoded {wh}x{ww} latents to {tuple(decoded.shape[-2:])} pixels, "
                         f"not {stride}x as the map assumes")
    target = F.avg_pool2d(decoded[0, :, 0], stride)  # (3, wh, ww)
    # Where the window was cut out of a larger frame, the decoder saw zero padding instead of the
    # neighbours the final decode will see: the pixels next to those edges are left out.
    keep = torch.ones(wh, ww, dtype=torch.bool)
    margin = CALIBRATION_MARGIN
    if top > 0:
        keep[:margin] = False
    if top + wh < h:
        keep[wh - margin:] = False
    if left > 0:
        keep[:, :margin] = False
    if left + ww < w:
        keep[:, ww - margin:] = False
    x = patch[:, 0].permute(1, 2, 0)[keep].double()  # (n, C)
    y = target.permute(1, 2, 0)[keep].double()  # (n, 3)
    if not len(x) or not torch.isfinite(x).all() or not torch.isfinite(y).all():
        raise ValueError("no finite latent pixels to calibrate on")
    # Ridge towards the fitted weights: one frame has fewer pixels than some VAEs have channels
    # (16 at 64x64 for TI2V), so the refit keeps the fitted map along directions the frame does
    # not span; the intercept is free, which is what removes a run's colour cast.
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    pull = CALIBRATION_PULL * max(float(xc.pow(2).mean()), 1e-6) * len(x)
    prior = projection.weight.double()
    gram = xc.T @ xc + pull * torch.eye(x.shape[1], dtype=x.dtype)
    weight = torch.linalg.solve(gram, xc.T @ (y - y_mean) + pull * prior)
    bias = y_mean - x_mean @ weight
    return LatentRGBProjection(weight.float().contiguous(), bias.float().contiguous(),
                               spatial_stride=stride, temporal_stride=projection.temporal_stride)


def _encode_normalized(vae: Any, video: torch.Tensor) -> torch.Tensor:
    """Encode (N, 3, T, H, W) in -1..1 to the pipeline's normalized latents (float32, CPU)."""
    mean, std = _latent_normalization(vae)
    latents = []
    with torch.no_grad():
        for batch in video.split(4):
            mu = _run_vae(vae, "encode", batch).latent_dist.mode()
            latents.append((mu.float().cpu() - mean) / std)
    return torch.cat(latents)


def _decode_normalized(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Decode normalized latents (N, C, t, h, w) to video (N, 3, T, H, W) in about -1..1 (float32, CPU)."""
    mean, std = _latent_normalization(vae)
    videos = []
    with torch.no_grad():
        for batch in latents.split(4):
            videos.append(_run_vae(vae, "decode", batch * std + mean).sample.float().cpu())
    return torch.cat(videos)


def _run_vae(vae: Any, method: str, tensor: torch.Tensor) -> Any:
    """`vae.encode` or `vae.decode` run where the VAE's weights are now, bypassing any offload hook.

    With diffusers' model CPU offload the VAE waits in host memory while the transformer works.
    `encode`/`decode` fire the offload hook, which moves the VAE to the GPU (pushing the model
    before it off; mid-run, an expert of many gigabytes) while an input already put on
    `vae.device`, the CPU, stays behind. The fit and a run's calibration are small: they run where
    the weights sit and leave them there.
    """
    function = getattr(type(vae), method)
    function = getattr(function, "__wrapped__", function)  # diffusers' apply_forward_hook wrapper
    return function(vae, tensor.to(vae.device, vae.dtype))


def _block_means(video: torch.Tensor, spatial: int, latent_frames: int, temporal: int) -> torch.Tensor:
    """Mean RGB of the pixels and frames each latent pixel covers (first latent frame = first frame)."""
    n, c, t, h, w = video.shape
    pooled = F.avg_pool2d(video.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w), spatial)
    pooled = pooled.reshape(n, t, c, h // spatial, w // spatial).permute(0, 2, 1, 3, 4)
    groups = [pooled[:, :, :1]]
    for k in range(1, latent_frames):
        groups.append(pooled[:, :, 1 + (k - 1) * temporal: 1 + k * temporal].mean(dim=2, keepdim=True))
    return torch.cat(groups, dim=2)


def calibration_clips(size: int = 96, count: int = 16, frames: int = 5, seed: int = CALIBRATION_SEED) -> torch.Tensor:
    """Deterministic synthetic clips (count, 3, frames, size, size) in -1..1, panning slowly.

    Flat colours, gradients, colour blocks, smooth noise, shapes and textured fills, so the map
    sees saturated primaries, greys, edges and texture.
    """
    rng = np.random.default_rng(seed)
    makers = (_flat, _gradient, _blocks, _smooth_noise, _shapes, _texture)
    if count < 1:
        return torch.zeros(0, 3, frames, size, size)
    clips = []
    for i in range(count):
        image = makers[(i + seed) % len(makers)](rng, size + 2 * frames)
        shift = int(rng.integers(-2, 3))
        clip = [np.roll(image, shift * f, axis=1)[frames:frames + size, frames:frames + size] for f in range(frames)]
        clips.append(np.stack(clip))
    array = np.clip(np.stack(clips), 0.0, 1.0).astype(np.float32)  # (N, T, H, W, 3)
    return torch.from_numpy(array).permute(0, 4, 1, 2, 3) * 2 - 1


def _flat(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.broadcast_to(rng.random(3), (size, size, 3)).copy()


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    ramp = (np.cos(angle) * x + np.sin(angle) * y)
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    a, b = rng.random(3), rng.random(3)
    return a + (b - a) * ramp[..., None]


def _blocks(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(2, 6))
    grid = rng.random((cells, cells, 3))
    grid[rng.random((cells, cells)) < 0.3] = rng.integers(0, 2, 3)  # some saturated corners of the cube
    index = np.arange(size) * cells // size
    return grid[index][:, index]


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = torch.from_numpy(rng.random((1, 3, 5, 5)).astype(np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine[0].permute(1, 2, 0).numpy()


def _shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    image = _gradient(rng, size)
    y, x = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 12, size / 4)]
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r ** 2 if rng.random() < 0.5 else (abs(x - cx) < r) & (abs(y - cy) < r / 2)
        image[mask] = rng.random(3)
    return image


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    return _smooth_noise(rng, size) + rng.normal(0, 0.12, (size, size, 1))


def _latent_normalization(vae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's latent normalization: normalized = (mu - mean) / std, per channel."""
    config = vae.config
    channels = int(config.z_dim)
    mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, channels, 1, 1, 1)
    std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, channels, 1, 1, 1)
    return mean, std


# --- caching --------------------------------------------------------------------------------


def vae_fingerprint(vae: Any) -> str:
    """A short hash of the VAE's config and (sampled, bf16-rounded) weights: same VAE, same print."""
    digest = hashlib.sha256()
    digest.update(f"{type(vae).__name__}:{FIT_VERSION}".encode())
    digest.update(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(vae.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            if flat.numel() and flat.is_floating_point() and flat.device.type != "meta":
                picks = torch.linspace(0, flat.numel() - 1, min(flat.numel(), 256)).long()
                sample = flat[picks.to(flat.device)].to(torch.bfloat16).float().cpu().numpy()
                digest.update(sample.tobytes())
    return digest.hexdigest()[:32]


def load_or_fit_projection(vae: Any, cache_path: Path) -> LatentRGBProjection:
    """The cached map for this VAE, or a fresh fit (saved to `cache_path`) when absent, stale or corrupt."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    cache_path = Path(cache_path)
    fingerprint = vae_fingerprint(vae)
    if cache_path.is_file():
        try:
            with safe_open(str(cache_path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("fingerprint") == fingerprint:
                    projection = LatentRGBProjection(
                        handle.get_tensor("weight"), handle.get_tensor("bias"),
                        spatial_stride=int(meta["spatial_stride"]), temporal_stride=int(meta["temporal_stride"]))
                    if projection.channels == int(vae.config.z_dim):
                        return projection
        except Exception as exc:  # a corrupt or foreign file is refitted, never fatal
            logger.warning("Refitting the preview map: %s could not be read (%s).", cache_path, exc)
    projection = fit_projection(vae)
    meta = {"fingerprint": fingerprint, "version": str(FIT_VERSION),
            "spatial_stride": str(projection.spatial_stride), "temporal_stride": str(projection.temporal_stride)}
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_path.parent, prefix=f".{cache_path.name}.", suffix=".part")
        os.close(fd)
        try:
            save_file({"weight": projection.weight, "bias": projection.bias}, tmp, metadata=meta)
            os.replace(tmp, cache_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:  # a read-only weights folder costs a refit next time, nothing more
        logger.warning("Could not cache the preview map at %s (%s).", cache_path, exc)
    return projection


# --- preview frames -------------------------------------------------------------------------


def preview_size(width: int, height: int, max_side: int = 256) -> tuple[int, int]:
    """(width, height) with the same aspect and the longest side at most `max_side` (never upscaled)."""
    if width < 1 or height < 1 or max_side < 1:
        raise ValueError(f"Preview sizes must be positive, got {width}x{height} with max side {max_side}.")
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def preview_frames(projection: LatentRGBProjection, latents: torch.Tensor, max_side: int = 256,
                   out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Latents (1, C, T, h, w) or (C, T, h, w) -> uint8 (T, h', w', 3), one image per latent frame.

    `out_size` is the video's (width, height): previews keep its aspect with the longest side at
    most `max_side`; without it, the latent size times the spatial stride is used.
    """
    latents = _single_latents(latents, projection.channels)
    _, _, h, w = latents.shape
    width, height = out_size or (w * projection.spatial_stride, h * projection.spatial_stride)
    size = preview_size(width, height, max_side)
    with torch.no_grad():
        # Project and quantize at latent resolution (the latents are read once), then resize in
        # uint8, which torch does with SIMD kernels: ~10x cheaper than resizing floats.
        rgb = projection.project_scaled(latents).clamp_(0, 255).to(torch.uint8).cpu()
        return _resize_uint8(torch.stack(tuple(rgb), dim=-1), size)  # (T, h, w, 3)


def decode_preview(pipe_or_vae: Any, latents: torch.Tensor, max_side: int | None = 256) -> np.ndarray:
    """Decode latents with the real VAE, as the pipeline does -> uint8 (T_video, h', w', 3).

    Every video frame is returned; `max_side` shrinks them to preview size (None keeps full size).
    """
    vae = getattr(pipe_or_vae, "vae", pipe_or_vae)
    latents = _single_latents(latents, int(vae.config.z_dim))
    mean, std = _latent_normalization(vae)
    with torch.no_grad():
        z = latents[None].to(vae.device, vae.dtype)
        z = z / (1.0 / std).to(z.device, z.dtype) + mean.to(z.device, z.dtype)
        video = vae.decode(z, return_dict=False)[0][0].float()  # (3, T, H, W) in -1..1
        rgb = ((video + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()
        frames = rgb.permute(1, 2, 3, 0).contiguous()  # (T, H, W, 3)
        height, width = frames.shape[1:3]
        size = (width, height) if max_side is None else preview_size(width, height, max_side)
        return _resize_uint8(frames, size)


def _resize_uint8(frames: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, 3) -> numpy uint8 (T, size[1], size[0], 3), bilinear (area-like when shrinking)."""
    width, height = size
    if frames.shape[1:3] != (height, width):
        channels_last = frames.permute(0, 3, 1, 2)  # a (T, 3, H, W) view in channels-last layout
        resized = F.interpolate(channels_last, size=(height, width), mode="bilinear",
                                align_corners=False, antialias=True)
        frames = resized.permute(0, 2, 3, 1)
    return np.ascontiguousarray(frames.numpy())


def _single_latents(latents: Any, channels: int) -> torch.Tensor:
    if isinstance(latents, np.ndarray):
        latents = torch.from_numpy(latents)
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"Latents must be a tensor, got {type(latents).__name__}.")
    if latents.ndim == 5:
        if latents.shape[0] != 1:
            raise ValueError(f"Previews take one video at a time, got a batch of {latents.shape[0]}.")
        latents = latents[0]
    if latents.ndim != 4 or latents.shape[0] != channels or 0 in latents.shape:
        raise ValueError(f"Latents must be ({channels}, frames, height, width), got {tuple(latents.shape)}.")
    return latents
