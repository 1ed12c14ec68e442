"""Where does an A14B pan go? Each expert's x0 estimate around the boundary, and along a sampled run.

    nice -n 10 python benchmarks/bench_handoff.py [--variant t2v-a14b | i2v-a14b]
        [--transformer DIR] [--transformer-2 DIR] [--clips 48] [--pairs 16]

1. Held-out pan clips (rendered and encoded with the folder's VAE) are noised to each sigma, and each
   expert's one-step x0 estimate is read by `training.measure.latent_dx`, in pixels a frame, signed so
   that the way the caption says is positive; the clean latents read about +1.15. Also each expert's loss
   with the captions' pan left and pan right swapped, against the right captions: an expert that ignores
   the camera words loses nothing.
2. With `--pairs N` (text-to-video only), the benchmark's first N pan pairs are sampled with the studio
   defaults, reading the x0 estimate after every step: where the high-noise expert hands over, a low-noise
   expert that cannot read the pan takes it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.request import DEFAULT_NEGATIVE_PROMPT  # noqa: E402
from training.cache_latents import encode_clips  # noqa: E402
from training.captions import caption  # noqa: E402
from training.control_pairs import PAIRS, pair_specs  # noqa: E402
from training.data import HELD_OUT_OFFSET, spec_for  # noqa: E402
from training.dit import (MAX_SEQUENCE_LENGTH, PromptEncoder, i2v_condition, padded_cross_attention,  # noqa: E402
                          short_context)
from training.measure import latent_dx  # noqa: E402

DEMO = ROOT / "weights" / "demo"
SIGMAS = (0.95, 0.9, 0.875, 0.85, 0.8, 0.7)
SWAP = {"pan left": "pan right", "pan right": "pan left"}


def pan_clips(count: int) -> list[int]:
    """The first `count` held-out clip indices whose camera pans."""
    out, i = [], HELD_OUT_OFFSET
    while len(out) < count:
        if spec_for(i).camera in SWAP:
            out.append(i)
        i += 1
    return out


def signed_dx(latents: torch.Tensor, sign: np.ndarray) -> np.ndarray:
    """Per clip, latent_dx from latent frame 1 to 3 (8 pixel frames; a latent pixel is 8 pixels: the
    reading is in pixels a frame), signed so that the captioned way is positive."""
    return np.array([latent_dx(z.numpy()) for z in latents]) * sign


@torch.no_grad()
def read_expert(model, x0: torch.Tensor, cond: torch.Tensor | None, prompts: list[str],
                swapped: list[str], encode: PromptEncoder, sign: np.ndarray) -> tuple[list[str], float]:
    """Per sigma, the x0 estimate's signed pan ("+0.70 (41)"), and the loss ratio with swapped words."""
    cells, losses = [], {False: 0.0, True: 0.0}
    for sigma in SIGMAS:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        xt = (1 - sigma) * x0 + sigma * noise
        inputs = torch.cat([xt, cond], dim=1) if cond is not None else xt
        timestep = torch.full((len(x0),), sigma * 1000)
        for swap, texts in ((False, prompts), (True, swapped)):
            context, bias = short_context(encode(texts), MAX_SEQUENCE_LENGTH)
            with padded_cross_attention(model, bias):
                v = model(hidden_states=inputs, timestep=timestep, encoder_hidden_states=context,
                          return_dict=False)[0]
            losses[swap] += (v - (noise - x0)).pow(2).mean().item()
            if not swap:
                dx = signed_dx(xt - sigma * v, sign)
                cells.append(f"{dx.mean():+.2f} ({int((dx > 0).sum())})")
    return cells, losses[True] / losses[False]


def held_out(folder: Path, experts: dict[str, Path], count: int) -> None:
    """Part 1: each expert on held-out pan clips noised to each sigma."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    indices = pan_clips(count)
    specs = [spec_for(i) for i in indices]
    sign = np.array([1.0 if s.camera == "pan left" else -1.0 for s in specs])
    vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32).eval()
    image = "i2v" in folder.name
    with torch.no_grad():
        x0, cond = encode_clips(vae, indices, i2v=image)
    cond = i2v_condition(cond) if image else None
    encode = PromptEncoder(folder)
    prompts = [caption(s, image_mode=image) for s in specs]
    swapped = [caption(dataclasses.replace(s, camera=SWAP[s.camera]), image_mode=image) for s in specs]
    clean = signed_dx(x0, sign)
    print(f"{count} held-out pan clips; the clean latents read {clean.mean():+.2f} px a frame "
          f"({int((clean > 0).sum())} the right way). x0 estimate's signed pan (clips the right way):")
    print("| expert | " + " | ".join(f"sigma {s}" for s in SIGMAS) + " | loss, words swapped |")
    print("|---" * (len(SIGMAS) + 2) + "|")
    for name, path in experts.items():
        model = WanTransformer3DModel.from_pretrained(path, dtype=torch.float32).eval()
        cells, ratio = read_expert(model, x0, cond, prompts, swapped, encode, sign)
        print(f"| {name} | " + " | ".join(cells) + f" | {(ratio - 1) * 100:+.1f}% |", flush=True)


def sampled(folder: Path, experts: dict[str, Path], pairs: int) -> None:
    """Part 2: the x0 estimate after every sampling step of the first `pairs` pan pairs."""
    from diffusers import WanPipeline, WanTransformer3DModel

    pipe = WanPipeline.from_pretrained(
        folder, dtype=torch.float32,
        transformer=WanTransformer3DModel.from_pretrained(experts["high"], dtype=torch.float32),
        transformer_2=WanTransformer3DModel.from_pretrained(experts["low"], dtype=torch.float32))
    pipe.set_progress_bar_config(disable=True)
    defaults = json.loads((folder / "studio.json").read_text())["defaults"]
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    specs = pair_specs(PAIRS[1], pairs)

    def run(prompts: list[str]) -> list[tuple[int, np.ndarray]]:
        steps = []

        def record(p, i, t, kwargs):  # UniPC keeps each step's x0 estimate as its model output
            steps.append((int(t), signed_dx(p.scheduler.model_outputs[-1], np.ones(len(prompts)))))
            return kwargs

        with torch.no_grad():
            pipe(prompt=prompts, negative_prompt=[DEFAULT_NEGATIVE_PROMPT] * len(prompts),
                 height=defaults["height"], width=defaults["width"], num_frames=defaults["frames"],
                 guidance_scale=defaults["guidance"], guidance_scale_2=defaults["guidance_low"],
                 num_inference_steps=defaults["steps"], output_type="latent",
                 generator=[torch.Generator().manual_seed(s) for s in range(len(prompts))],
                 callback_on_step_end=record)
        return steps

    left = run([caption(a) for _, a, _ in specs])
    right = run([caption(b) for _, _, b in specs])
    print(f"\n{pairs} sampled pan pairs: the x0 estimate's pan (px a frame) after each step")
    print("| step | timestep | expert | pan left | pan right | pairs right |\n|---|---|---|---|---|---|")
    for n, ((t, a), (_, b)) in enumerate(zip(left, right), 1):
        expert = "high" if t >= boundary else "low"
        print(f"| {n} | {t} | {expert} | {a.mean():+.2f} | {b.mean():+.2f} | {int((a > b).sum())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t2v-a14b", "i2v-a14b"), default="t2v-a14b")
    parser.add_argument("--transformer", type=Path, help="high-noise expert (default: the folder's)")
    parser.add_argument("--transformer-2", type=Path, help="low-noise expert (default: the folder's)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=0, help="also sample this many pan pairs (t2v-a14b)")
    args = parser.parse_args()
    if args.pairs and args.variant != "t2v-a14b":
        parser.error("--pairs samples text-to-video pan pairs; use it with --variant t2v-a14b.")
    torch.set_num_threads(1)
    folder = DEMO / args.variant
    experts = {"high": args.transformer or folder / "transformer",
               "low": args.transformer_2 or folder / "transformer_2"}
    held_out(folder, experts, args.clips)
    if args.pairs:
        sampled(folder, experts, args.pairs)


if __name__ == "__main__":
    main()
