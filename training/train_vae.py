"""Train a small AutoencoderKLWan on world clips: first on frames, then on clips, then (optionally)
the decoder alone on clips.

    nice -n 10 python -m training.train_vae --kind wan21 --out /tmp/demo/vae_wan21
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from .data import HELD_OUT_OFFSET, clip_batch, frame_batch
from .vae_tricks import image_to_video_init, single_frame_as_2d


def build_vae(kind: str) -> AutoencoderKLWan:
    """The demo VAE: Wan2.1 style (z16, stride 8) or Wan2.2 style (z48, patch 2, stride 16)."""
    common = dict(base_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                  temperal_downsample=[False, True, True])
    if kind == "wan21":
        return AutoencoderKLWan(z_dim=16, **common)
    if kind == "wan22":
        return AutoencoderKLWan(z_dim=48, in_channels=12, out_channels=12, is_residual=True,
                                patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48,
                                latents_std=[1.0] * 48, **common)
    raise ValueError(f"--kind must be wan21 or wan22, got {kind!r}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def held_out_psnr(vae: AutoencoderKLWan, clips: int = 8, frames: int = 17) -> float:
    """Mean reconstruction PSNR over held-out clips."""
    scores = []
    for i in range(clips):
        x = clip_batch([HELD_OUT_OFFSET + i], frames)
        y = vae(x).sample
        scores.append(psnr(x, y))
    return float(np.mean(scores))


@torch.no_grad()
def set_latent_stats(vae: AutoencoderKLWan, clips: int = 16) -> None:
    """Record per-channel latent mean and std so pipelines see roughly unit-variance latents."""
    x = clip_batch([HELD_OUT_OFFSET + 100 + i for i in range(clips)], 17)
    z = torch.cat([vae.encode(x[i:i + 1]).latent_dist.mode() for i in range(clips)])
    mean = z.mean(dim=(0, 2, 3, 4))
    std = z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


def random_crop(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random size x size window (convolutions are translation-equivariant: crops train them
    as well as whole frames, at a fraction of the cost)."""
    h, w = x.shape[-2:]
    if size >= min(h, w):
        return x
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return x[..., top:top + size, left:left + size]


def loss_fn(vae: AutoencoderKLWan, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss (MSE + L1) with a light pull of latent means towards zero."""
    mu = vae.encode(x).latent_dist.mode()
    y = vae.decode(mu).sample
    return (y - x).pow(2).mean() + 0.1 * (y - x).abs().mean() + 1e-4 * mu.pow(2).mean()


def train(kind: str, image_steps: int, video_steps: int, crop: int, minutes: float, out: Path,
          seed: int, log_every: int, image_lr: float = 3e-4, video_lr: float = 1e-4,
          batch: int = 4, video_crop: int | None = None, decoder_steps: int = 0,
          decoder_lr: float = 1e-4) -> None:
    """Run the phases (fixed step counts; `minutes` caps the whole run), then save to `out`."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = build_vae(kind).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=image_lr, weight_decay=0.0)
    start = time.time()
    deadline = start + minutes * 60
    step, next_clip = 0, 0

    def lr_at(done: int, total: int, peak: float) -> float:
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done / max(total, 1)))))

    with single_frame_as_2d():
        for i in range(image_steps):
            if time.time() > deadline:
                print(f"time cap reached in the image phase at step {i}", flush=True)
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(i, image_steps, image_lr) * min(1.0, (i + 1) / 20)
            idx = list(range(next_clip, next_clip + batch))
            next_clip += batch
            loss = loss_fn(vae, random_crop(frame_batch(idx, rng), crop, rng))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % log_every == 0:
                print(f"image step {step} loss {loss.item():.5f} t {time.time() - start:.0f}s", flush=True)
            if step % (log_every * 4) == 0:
                vae.eval()
                print(f"  held-out first-frame PSNR {held_out_psnr(vae, 4, frames=1):.2f} dB", flush=True)
                vae.train()
    vae.eval()
    print(f"after image phase: held-out first-frame PSNR {held_out_psnr(vae, 4, frames=1):.2f} dB",
          flush=True)
    image_to_video_init(vae)
    vae.train()

    def clip_phase(name: str, steps: int, peak_lr: float) -> None:
        """Steps on one 9-frame clip each, training the parameters that require grad."""
        nonlocal step, next_clip
        opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=peak_lr)
        for i in range(steps):
            if time.time() > deadline:
                print(f"time cap reached in the {name} phase at step {i}", flush=True)
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(i, steps, peak_lr) * min(1.0, (i + 1) / 10)
            loss = loss_fn(vae, random_crop(clip_batch([next_clip], 9), video_crop or crop, rng))
            next_clip += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % log_every == 0:
                print(f"{name} step {step} loss {loss.item():.5f} t {time.time() - start:.0f}s", flush=True)

    clip_phase("video", video_steps, video_lr)
    # the encoder is final here: latents cached from a run without this phase stay valid
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    clip_phase("decoder", decoder_steps, decoder_lr)
    vae.eval()
    set_latent_stats(vae)
    score = held_out_psnr(vae)
    print(f"held-out clip PSNR {score:.2f} dB after {step} steps", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(out)
    crops = f"crop={crop}" + (f" video_crop={video_crop}" if video_crop else "")
    minutes_run = (time.time() - start) / 60
    (out / "train_log.txt").write_text(
        f"kind={kind} {crops} image_steps={image_steps} video_steps={video_steps} "
        f"decoder_steps={decoder_steps} seed={seed} "
        f"steps_run={step} minutes={minutes_run:.1f} held_out_psnr_db={score:.2f}\n")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["wan21", "wan22"], required=True)
    parser.add_argument("--image-steps", type=int, default=500)
    parser.add_argument("--video-steps", type=int, default=30)
    parser.add_argument("--crop", type=int, default=32, help="train on crops of this size")
    parser.add_argument("--video-crop", type=int, default=None,
                        help="crop size in the video phase, whose steps cost ~8x an image step "
                             "(default: --crop)")
    parser.add_argument("--batch", type=int, default=4, help="frames per image step")
    parser.add_argument("--image-lr", type=float, default=3e-4)
    parser.add_argument("--video-lr", type=float, default=1e-4)
    parser.add_argument("--decoder-steps", type=int, default=0,
                        help="last phase: clip steps that train the decoder only, encoder frozen")
    parser.add_argument("--decoder-lr", type=float, default=1e-4)
    parser.add_argument("--minutes", type=float, default=60.0, help="cap on the whole run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args()
    train(args.kind, args.image_steps, args.video_steps, args.crop, args.minutes, args.out, args.seed,
          args.log_every, args.image_lr, args.video_lr, args.batch, args.video_crop, args.decoder_steps,
          args.decoder_lr)


if __name__ == "__main__":
    main()
