"""Does a text-to-video transformer pan? The demo benchmark's pan pairs, read in pixels and in latents.

    nice -n 10 python benchmarks/bench_pan.py [--transformer DIR] [--transformer-2 DIR | none]
        [--seeds 32]

Generates the pan left vs right pairs of bench_demo_quality.py (same specs, seeds, prompts and
studio defaults of weights/demo/t2v-a14b) with the given experts (default: the committed ones;
`--transformer-2 none` runs one transformer over every step). Each pair is read twice: by the
benchmark's phase correlation on the clip decoded in float (near-ties can read otherwise than on
bench_demo_quality's uint8 clips), and by `training.measure.latent_dx` on the latent,
where content that moves under a featureless, blurred background still shows. Both in pixels a frame
at the demo's 64x64 (the world pans 1.34 px a frame; its own latents read about +-1.19 by latent_dx).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.request import DEFAULT_NEGATIVE_PROMPT  # noqa: E402
from training.captions import caption  # noqa: E402
from training.control_pairs import PAIRS, pair_specs  # noqa: E402
from training.measure import latent_dx, motion  # noqa: E402

FOLDER = ROOT / "weights" / "demo" / "t2v-a14b"


def pan_side(pipe, defaults: dict, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (seed = its index): pixel dx and latent dx, both in pixels a frame."""
    kwargs = dict(negative_prompt=[DEFAULT_NEGATIVE_PROMPT] * len(prompts), height=defaults["height"],
                  width=defaults["width"], num_frames=defaults["frames"], guidance_scale=defaults["guidance"],
                  num_inference_steps=defaults["steps"], output_type="latent", max_sequence_length=512)
    if pipe.transformer_2 is not None:
        kwargs["guidance_scale_2"] = defaults["guidance_low"]
    with torch.no_grad():
        seeds = [torch.Generator().manual_seed(s) for s in range(len(prompts))]
        latents = pipe(prompt=prompts, generator=seeds, **kwargs).frames
        vae = pipe.vae
        std, mean = (torch.tensor(v).view(1, -1, 1, 1, 1)
                     for v in (vae.config.latents_std, vae.config.latents_mean))
        raw = latents * std + mean
        clips = vae.decode(raw).sample.clamp(-1, 1).add(1).div(2).permute(0, 2, 3, 4, 1).numpy()
    first, last = 1, 3  # latent frames 8 pixel frames apart, clear of the single-frame latent 0
    per_frame = pipe.vae_scale_factor_spatial / ((last - first) * pipe.vae_scale_factor_temporal)
    return (np.array([motion(c)[1] for c in clips]),
            np.array([latent_dx(lat.numpy(), first, last) * per_frame for lat in latents]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transformer", type=Path, default=FOLDER / "transformer")
    parser.add_argument("--transformer-2", default=str(FOLDER / "transformer_2"))
    parser.add_argument("--seeds", type=int, default=32)
    args = parser.parse_args()
    from diffusers import WanPipeline, WanTransformer3DModel

    torch.set_num_threads(1)
    two = args.transformer_2 != "none"
    pipe = WanPipeline.from_pretrained(
        FOLDER, dtype=torch.float32,
        transformer=WanTransformer3DModel.from_pretrained(args.transformer, dtype=torch.float32),
        transformer_2=(WanTransformer3DModel.from_pretrained(args.transformer_2, dtype=torch.float32)
                       if two else None),
        boundary_ratio=0.875 if two else None)
    pipe.set_progress_bar_config(disable=True)
    defaults = json.loads((FOLDER / "studio.json").read_text())["defaults"]
    specs = pair_specs(PAIRS[1], args.seeds)
    left = pan_side(pipe, defaults, [caption(a) for _, a, _ in specs])
    right = pan_side(pipe, defaults, [caption(b) for _, _, b in specs])
    print(f"{args.transformer} + {args.transformer_2}, {args.seeds} pairs")
    for name, i in (("pixels", 0), ("latents", 1)):
        print(f"  {name:<19} right in {int((left[i] > right[i]).sum()):2d}/{args.seeds}, "
              f"mean dx: pan left {left[i].mean():+.2f}, pan right {right[i].mean():+.2f} px a frame")


if __name__ == "__main__":
    main()
