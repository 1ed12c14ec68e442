"""Encode world clips with a trained demo VAE once, so transformer training never touches the VAE.

    nice -n 10 python -m training.cache_latents --vae /tmp/demo/vae_wan21 --count 600 \\
        --out /tmp/demo/latents_wan21.pt [--i2v]

Latents are stored normalised as the Wan pipelines expect them ((z - latents_mean) / latents_std).
With --i2v it also stores the I2V condition: the encoding of the first frame followed by grey
frames, exactly as WanImageToVideoPipeline builds it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from .data import clip_batch

FRAMES = 17


def normaliser(vae: AutoencoderKLWan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) from the VAE config, shaped for (B, C, T, H, W)."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    return (torch.tensor(vae.config.latents_mean).view(shape),
            torch.tensor(vae.config.latents_std).view(shape))


@torch.no_grad()
def cache(vae_dir: Path, count: int, out: Path, i2v: bool, first_index: int = 0, batch: int = 16) -> None:
    """Encode clips first_index .. first_index + count - 1 and save them with their indices."""
    torch.set_num_threads(1)
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    mean, std = normaliser(vae)
    latents, conditions = [], []
    start = time.time()
    indices = list(range(first_index, first_index + count))
    for n in range(0, count, batch):
        x = clip_batch(indices[n:n + batch], FRAMES)
        latents.append(((vae.encode(x).latent_dist.mode() - mean) / std).half())
        if i2v:
            cond = torch.cat([x[:, :, :1], torch.zeros_like(x[:, :, 1:])], dim=2)
            conditions.append(((vae.encode(cond).latent_dist.mode() - mean) / std).half())
        print(f"{min(n + batch, count)}/{count} clips, {time.time() - start:.0f}s", flush=True)
    data = {"indices": indices, "latents": torch.cat(latents)}
    if i2v:
        data["conditions"] = torch.cat(conditions)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    print(f"saved {count} latents {tuple(data['latents'].shape)} to {out}")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--i2v", action="store_true")
    args = parser.parse_args()
    cache(args.vae, args.count, args.out, args.i2v, args.first_index)


if __name__ == "__main__":
    main()
