"""How good are the demo weights? VAE reconstruction, preview map, control adherence, colours.

    nice -n 10 python benchmarks/bench_demo_quality.py [--variants t2v-a14b ...] [--seeds 32]
        [--write-scores]

Runs the committed folders in weights/demo through diffusers' own pipelines (fp32 on CPU) with
each folder's studio defaults and the studio's default negative prompt. Control adherence: for
each pair, both sides get the same seed and the same rest of the prompt; a pair counts as right
when the measured property moves the way the control says. Prints a table per variant; with
--write-scores, also writes scores.json and refreshes the model card in each folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.request import DEFAULT_NEGATIVE_PROMPT  # noqa: E402
from training.captions import caption  # noqa: E402
from training.control_pairs import (BENCH_OFFSET, IMAGE_PAIRS, PAIRS, Outcome, Pair, outcome,  # noqa: E402
                                    pair_specs, world_outcome)
from training.data import HELD_OUT_OFFSET, clip_batch, spec_for  # noqa: E402
from training.measure import background_colors, dominant_color  # noqa: E402
from training.model_card import write_card  # noqa: E402
from training.world import COLORS, render  # noqa: E402

DEMO = ROOT / "weights" / "demo"
def load(folder: Path, variant: str, image: bool = False):
    from diffusers import WanImageToVideoPipeline, WanPipeline

    cls = WanImageToVideoPipeline if image or variant == "i2v-a14b" else WanPipeline
    pipe = cls.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, defaults: dict, prompts: list[str], seeds: list[int], image=None) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) for prompts with their seeds (one call per 16)."""
    out = []
    for start in range(0, len(prompts), 16):
        kwargs = dict(
            prompt=prompts[start:start + 16], negative_prompt=[DEFAULT_NEGATIVE_PROMPT] * len(prompts[start:start + 16]),
            height=defaults["height"], width=defaults["width"], num_frames=defaults["frames"],
            num_inference_steps=defaults["steps"], guidance_scale=defaults["guidance"],
            generator=[torch.Generator().manual_seed(s) for s in seeds[start:start + 16]],
            output_type="np", max_sequence_length=512,
        )
        if defaults.get("guidance_low") is not None and getattr(pipe.config, "boundary_ratio", None):
            kwargs["guidance_scale_2"] = defaults["guidance_low"]
        if image is not None:
            kwargs["image"] = image
        with torch.no_grad():
            frames = pipe(**kwargs).frames
        out.append((np.clip(np.asarray(frames), 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def vae_psnr(pipe, clips: int, size: int) -> float:
    """Mean PSNR of the VAE's reconstruction of held-out clips rendered size x size."""
    scores = []
    with torch.no_grad():
        for i in range(clips):
            x = clip_batch([HELD_OUT_OFFSET + 500 + i], 17, size)
            y = pipe.vae(x).sample.clamp(-1, 1)
            mse = ((x - y) / 2).pow(2).mean().item()
            scores.append(10 * np.log10(1 / max(mse, 1e-12)))
    return float(np.mean(scores))


def preview_correlation(pipe, clips: int, size: int) -> float:
    """Correlation of the fitted latent-to-RGB preview with the full decode, on held-out clips."""
    from pipelines.previews import _latent_normalization, fit_projection, preview_frames

    projection = fit_projection(pipe.vae)
    mean, std = _latent_normalization(pipe.vae)
    a, b = [], []
    with torch.no_grad():
        for i in range(clips):
            x = clip_batch([HELD_OUT_OFFSET + 700 + i], 17, size)
            z = (pipe.vae.encode(x).latent_dist.mode() - mean) / std
            preview = preview_frames(projection, z, max_side=size, out_size=(size, size)).astype(np.float32)
            decoded = ((pipe.vae.decode(z * std + mean).sample[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).numpy()
            blocks = [decoded[:1]] + [decoded[1 + 4 * k:5 + 4 * k] for k in range(len(preview) - 1)]
            target = np.stack([blk.mean(axis=0) for blk in blocks]) * 255
            a.append(preview.ravel())
            b.append(target.ravel())
    return float(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])


def adherence(pipe, defaults: dict, pairs: list[Pair], seeds: int,
              image_mode: bool) -> list[tuple[str, Outcome, Outcome]]:
    """Per pair: its name, how the model's clips came out and how the world's own clips do."""
    rows = []
    for pair in pairs:
        specs = pair_specs(pair, seeds)
        prompts = [caption(spec, image_mode=image_mode) for _, a, b in specs for spec in (a, b)]
        seed_list = [s for s in range(seeds) for _ in range(2)]
        if image_mode:
            from PIL import Image

            clips = np.concatenate([
                generate(pipe, defaults, prompts[2 * s:2 * s + 2], seed_list[2 * s:2 * s + 2],
                         Image.fromarray((render(specs[s][0], 1, defaults["height"], defaults["width"])[0]
                                          * 255).round().astype(np.uint8)))
                for s in range(seeds)])
        else:
            clips = generate(pipe, defaults, prompts, seed_list)
        model = outcome(pair, [(clips[2 * s], clips[2 * s + 1]) for s in range(seeds)], specs)
        world = world_outcome(pair, seeds, defaults["height"], defaults["frames"])
        rows.append((pair.name, model, world))
        print(f"  {pair.name:40s} {model.right:3d}/{seeds}   (world's own clips {world.right}/{seeds}); "
              f"effect {model.effect:+.3f}, the world's {world.effect:+.3f}", flush=True)
    return rows


def adherence_row(kind: str, name: str, model: Outcome, world: Outcome) -> dict[str, str]:
    """A scores.json row: the model's result, the world's, and the model's effect as a share of the world's."""
    return {"measure": f"{kind}: {name}", "result": f"{model.right}/{model.seeds}", "target": ">= 90%",
            "world": f"{world.right}/{world.seeds}", "effect": f"{model.effect / world.effect:.0%}"}


def colour_following(pipe, defaults: dict, seeds: int) -> tuple[int, int]:
    names = list(COLORS)
    specs = [dataclasses.replace(spec_for(BENCH_OFFSET + 500 + s), color=names[s % len(names)],
                                 tone="neutral", light="top light", time="daytime",
                                 shot=("close-up", "medium shot")[s % 2]) for s in range(seeds)]
    clips = generate(pipe, defaults, [caption(s) for s in specs], list(range(seeds)))
    right = sum(dominant_color(c, background=background_colors(s.time, s.scene)) == s.color
                for c, s in zip(clips, specs))
    return int(right), seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["t2v-a14b", "i2v-a14b", "ti2v-5b"])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--vae-clips", type=int, default=16)
    parser.add_argument("--write-scores", action="store_true")
    parser.add_argument("--demo-dir", type=Path, default=DEMO)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for variant in args.variants:
        folder = args.demo_dir / variant
        if not (folder / "model_index.json").is_file():
            print(f"{variant}: no demo weights in {folder}, skipped")
            continue
        defaults = json.loads((folder / "studio.json").read_text())["defaults"]
        pipe = load(folder, variant)
        print(f"== {variant} ({args.seeds} seeds, {defaults['steps']} steps, {defaults['width']}x"
              f"{defaults['height']}x{defaults['frames']})", flush=True)
        rows = []
        if defaults["width"] != defaults["height"]:
            raise SystemExit(f"{variant}: the benchmark renders square clips; its default is "
                             f"{defaults['width']}x{defaults['height']}.")
        size = defaults["width"]  # the VAE and preview are measured at the size the studio generates
        psnr = vae_psnr(pipe, args.vae_clips, size)
        rows.append({"measure": f"VAE PSNR, {args.vae_clips} held-out clips", "result": f"{psnr:.2f} dB",
                     "target": ">= 28 dB"})
        corr = preview_correlation(pipe, 8, size)
        rows.append({"measure": "preview map vs full decode, correlation", "result": f"{corr:.3f}",
                     "target": ">= 0.85"})
        seconds = studio_generation_seconds(folder, variant)
        rows.append({"measure": "one default studio generation, every preview rendered, seconds",
                     "result": f"{seconds:.1f}", "target": "< 20"})
        print(f"  VAE PSNR {psnr:.2f} dB, preview corr {corr:.3f}, one generation {rows[-1]['result']} s",
              flush=True)
        if variant != "i2v-a14b":
            for name, model, world in adherence(pipe, defaults, PAIRS, args.seeds, image_mode=False):
                rows.append(adherence_row("text", name, model, world))
            right, total = colour_following(pipe, defaults, args.seeds)
            print(f"  {'prompt colour is dominant':40s} {right:3d}/{total}", flush=True)
            rows.append({"measure": "prompt colour is the dominant subject colour", "result": f"{right}/{total}",
                         "target": ">= 90%"})
        if variant != "t2v-a14b":
            image_pipe = pipe if variant == "i2v-a14b" else load(folder, variant, image=True)
            for name, model, world in adherence(image_pipe, defaults, IMAGE_PAIRS, args.seeds, image_mode=True):
                rows.append(adherence_row("image", name, model, world))
        if args.write_scores:
            path = folder / "scores.json"
            # the analysis is written by a person from these numbers: keep it
            analysis = json.loads(path.read_text()).get("analysis") if path.is_file() else None
            scores = {"rows": rows, "note": f"Measured with benchmarks/bench_demo_quality.py --seeds {args.seeds} "
                      "on 2 CPU cores; pairs share seed and the rest of the prompt.", "analysis": analysis}
            path.write_text(json.dumps(scores, indent=2) + "\n")
            write_card(folder)


def studio_generation_seconds(folder: Path, variant: str) -> float:
    """Seconds for one default generation through the studio's engine on 2 threads, rendering
    every step's preview; loading and the preview map's fit (start-up) are excluded."""
    import tempfile

    from pipelines.engine import Engine
    from pipelines.events import PreviewEvent
    from pipelines.manager import ModelManager
    from pipelines.request import PreviewSettings, VariantDefaults, build_request
    from pipelines.variants import get_variant

    studio = json.loads((folder / "studio.json").read_text())["defaults"]
    defaults = VariantDefaults.official(get_variant(variant)).updated(studio)
    raw = {"variant": variant, "prompt": caption(spec_for(BENCH_OFFSET)), "seed": 0,
           "preview": PreviewSettings()}
    render = lambda event: event.frames if isinstance(event, PreviewEvent) else None  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if variant == "i2v-a14b":
                raw["image_path"] = str(Path(tmp) / "start.png")
                _first_image(studio).save(raw["image_path"])
            request = build_request(raw, defaults).request
            engine = Engine(ModelManager({variant: str(folder)}, Path(tmp), device="cpu", demo_dir=None))
            engine.generate(request, render)  # start-up: load the pipeline, fit the preview map
            started = time.perf_counter()
            engine.generate(request, render)
            return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def _first_image(defaults: dict):
    from PIL import Image

    frame = render(spec_for(BENCH_OFFSET), 1, defaults["height"], defaults["width"])[0]
    return Image.fromarray((frame * 255).round().astype(np.uint8))


if __name__ == "__main__":
    main()
