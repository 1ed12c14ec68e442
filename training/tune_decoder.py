"""Fine-tune only the decoder of a trained demo VAE on world clips.

    python -m training.tune_decoder --vae /tmp/demo/vae_wan21 --steps 800 --out /tmp/demo/vae_wan21_dec

The encoder, its latent statistics and so every cached latent stay exactly as they were, so the
transformers trained on those latents stay valid: this only sharpens what the studio shows.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from .data import clip_batch
from .train_vae import held_out_psnr

FIRST_CLIP = 500_000  # clips the first training run never drew


def tune(vae_dir: Path, out: Path, steps: int, lr: float, frames: int, minutes: float, seed: int,
         log_every: int, eval_clips: int = 8) -> None:
    """Train decoder and post_quant_conv against the frozen encoder's latents, then save."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan.from_pretrained(vae_dir, dtype=torch.float32)
    vae.requires_grad_(False)
    trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    before = held_out_psnr(vae.eval(), eval_clips)
    print(f"held-out clip PSNR before {before:.2f} dB", flush=True)
    start, deadline, losses = time.time(), time.time() + minutes * 60, []
    for step in range(steps):
        if time.time() > deadline:
            print(f"time cap reached at step {step}", flush=True)
            break
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        x = clip_batch([FIRST_CLIP + step], frames)
        with torch.no_grad():
            mu = vae.encode(x).latent_dist.mode()
        y = vae.decode(mu).sample
        loss = (y - x).pow(2).mean() + 0.1 * (y - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            print(f"step {step + 1} loss {np.mean(losses[-log_every:]):.5f} t {time.time() - start:.0f}s",
                  flush=True)
    score = held_out_psnr(vae.eval(), eval_clips)
    print(f"held-out clip PSNR after {score:.2f} dB", flush=True)
    vae.save_pretrained(out)
    first = (vae_dir / "train_log.txt").read_text().strip() if (vae_dir / "train_log.txt").is_file() else ""
    (out / "train_log.txt").write_text(
        f"{first}; then decoder only: steps_run={len(losses)} of {steps} frames={frames} lr={lr} "
        f"seed={seed} minutes={(time.time() - start) / 60:.1f} held_out_psnr_db={score:.2f}\n")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vae", type=Path, required=True, help="folder from training.train_vae")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--minutes", type=float, default=30.0, help="cap on the whole run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args()
    tune(args.vae, args.out, args.steps, args.lr, args.frames, args.minutes, args.seed, args.log_every)


if __name__ == "__main__":
    main()
