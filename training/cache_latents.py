"""Encode world clips with a trained demo VAE once, so transformer training never touches the VAE.

    nice -n 10 python -m training.cache_latents --vae /tmp/demo/vae_wan21 --count 600 \\
        --out /tmp/demo/latents_wan21.pt [--i2v]

Latents are stored normalised as the Wan pipelines expect them ((z - latents_mean) / latents_std).
With --i2v it also stores the I2V condition: the encoding of the first frame followed by grey
frames, exactly as WanImageToVideoPipeline builds it. Each file also holds "subject": the share of
each latent cell the subject covers, which transformer training can weight its loss by.
`--subject-only` adds that to a file cached before it existed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from .data import clip_batch, spec_for
from .world import subject_mask

FRAMES = 17


def normaliser(vae: AutoencoderKLWan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) from the VAE config, shaped for (B, C, T, H, W)."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    return (torch.tensor(vae.config.latents_mean).view(shape),
            torch.tensor(vae.config.latents_std).view(shape))


def subject_coverage(indices: list[int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Share of each latent cell (frames, height, width) the subject covers, per clip: latent
    frame 0 is pixel frame 0 and each later one four pixel frames, as the Wan VAEs compress time."""
    masks = torch.from_numpy(np.stack([subject_mask(spec_for(i), FRAMES) for i in indices])).float()
    first, rest = masks[:, :1], masks[:, 1:].unflatten(1, (grid[0] - 1, -1)).mean(dim=2)
    frames = torch.cat([first, rest], dim=1)
    return F.adaptive_avg_pool2d(frames, grid[1:]).half()


def add_subject_coverage(path: Path, batch: int = 64) -> None:
    """Add the "subject" entry to a latent file cached without it."""
    data = torch.load(path)
    grid = tuple(data["latents"].shape[2:])
    indices = data["indices"]
    data["subject"] = torch.cat([subject_coverage(indices[n:n + batch], grid)
                                 for n in range(0, len(indices), batch)])
    torch.save(data, path)
    print(f"added subject coverage {tuple(data['subject'].shape)} to {path}")


@torch.no_grad()
def encode_clips(vae: AutoencoderKLWan, indices: list[int], i2v: bool = False,
                 size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised latents of the clips with these indices and, with `i2v`, their I2V conditions."""
    mean, std = normaliser(vae)
    x = clip_batch(indices, FRAMES, size)
    latents = (vae.encode(x).latent_dist.mode() - mean) / std
    if not i2v:
        return latents, None
    cond = torch.cat([x[:, :, :1], torch.zeros_like(x[:, :, 1:])], dim=2)
    return latents, (vae.encode(cond).latent_dist.mode() - mean) / std


@torch.no_grad()
def cache(vae_dir: Path, count: int, out: Path, i2v: bool, first_index: int = 0, batch: int = 16,
          size: int = 64) -> None:
    """Encode clips first_index .. first_index + count - 1, rendered size x size, and save them with
    their indices."""
    torch.set_num_threads(1)
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    latents, conditions, subject = [], [], []
    start = time.time()
    indices = list(range(first_index, first_index + count))
    for n in range(0, count, batch):
        z, cond = encode_clips(vae, indices[n:n + batch], i2v, size)
        latents.append(z.half())
        subject.append(subject_coverage(indices[n:n + batch], tuple(z.shape[2:])))
        if i2v:
            conditions.append(cond.half())
        print(f"{min(n + batch, count)}/{count} clips, {time.time() - start:.0f}s", flush=True)
    data = {"indices": indices, "latents": torch.cat(latents), "subject": torch.cat(subject)}
    if i2v:
        data["conditions"] = torch.cat(conditions)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    print(f"saved {count} latents {tuple(data['latents'].shape)} to {out}")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--i2v", action="store_true")
    parser.add_argument("--size", type=int, default=64, help="render clips this many pixels square")
    parser.add_argument("--subject-only", action="store_true",
                        help="add subject coverage to the existing --out file instead of encoding")
    args = parser.parse_args()
    if args.subject_only:
        add_subject_coverage(args.out)
        return
    if args.vae is None:
        parser.error("--vae is required to encode clips")
    cache(args.vae, args.count, args.out, args.i2v, args.first_index, size=args.size)


if __name__ == "__main__":
    main()
