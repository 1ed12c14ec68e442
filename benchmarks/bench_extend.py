"""Extending takes: how far apart in tone are a parent and its extension at the seam, before and
after `pipelines.extend`'s colour match? Demo weights, CPU.

    nice -n 10 python benchmarks/bench_extend.py [--seeds 8] [--variants i2v-a14b ti2v-5b]

For each seed, as the studio does it: a parent take from a start image (the world's first frame of
clip spec BENCH_OFFSET + 950 + seed, with its caption), written to MP4; its last frame read back
from that MP4 (`pipelines.video.last_frame`) as the start image of a child take (same prompt, seed
+ 1000), and the child's last frame likewise for a grandchild (seed + 2000); all three read back
from their MP4s and joined by `assemble` with each colour match. The shot keeps the parent's last
frame and drops the child's frame 0 (the shared frame counts once), so the seam the viewer sees is
parent[-1] -> child[1]. Figures, 0-255, mean (max) over the seams:

  seam    seam_difference(parent last, child first as the shot shows it): mean absolute
          per-channel difference of the two frames' mean colours (the issue's measure; the row
          "none" is before matching). The match is estimated on these two frames, so "after"
          shows the fit; the next two figures are held out
  1st s   over the first second after the seam, the largest distance of a frame's mean colour
          from the parent's last frame, per channel, averaged over channels (how far the tone
          strays right after the seam)
  pixel   mean absolute per-pixel difference across the seam (tone and detail)
  drift   mean colour of the shot's last 4 frames against the parent's last 4 (how far the whole
          chain wanders in tone; content changes it too, so this is context, not a target)
  own     the parent's own last step (parent[-2] -> parent[-1]), for scale

With --start-from shot, each child starts instead from the last frame of the shot assembled so
far (default match), i.e. already colour-matched: the other way to wire "Extend". Only the
default match's row is meaningful then (the parts were made for it).

Also printed per variant: how far the child's frame 0 (its copy of the start image: MP4 round
trip, VAE, model) already is from the parent's last frame. Both seams of the three-part chain are
counted (parent -> child, child -> grandchild).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusers.utils import logging as diffusers_logging  # noqa: E402

from pipelines.extend import assemble, pixel_difference, seam_difference  # noqa: E402
from training.captions import caption  # noqa: E402
from training.control_pairs import BENCH_OFFSET  # noqa: E402
from training.data import spec_for  # noqa: E402
from training.world import render  # noqa: E402

DEMO = ROOT / "weights" / "demo"
TAKE_OFFSET = BENCH_OFFSET + 950  # clip specs of these takes: no setting was chosen on them
METHODS = {  # row name: assemble's keyword arguments
    "none": {"match": "none"},
    "mean": {"match": "mean"},
    "mean-std": {"match": "mean-std"},
    "affine": {"match": "affine"},
    "affine, on frame 0": {"match": "affine", "seam_frame": 0},
    "affine, fade 1 s": {"match": "affine", "fade_s": 1.0},
    "affine, fade 2 s": {"match": "affine", "fade_s": 2.0},
    "mean, fade 1 s": {"match": "mean", "fade_s": 1.0},
}
PARTS = 3
KEYS = ("seam", "1st s", "pixel", "drift", "own", "copy")


def chain(engine: Any, defaults: Any, variant: str, seed: int, folder: Path,
          start_from: str = "part") -> list[np.ndarray]:
    """Parent, child, grandchild of one seed, each written to MP4 and read back as the studio does;
    each child starts from its parent's last frame ("part") or the shot's so far ("shot")."""
    from PIL import Image

    from pipelines.recipe import Recipe
    from pipelines.request import PreviewSettings, build_request
    from pipelines.video import last_frame, read_frames, write_mp4

    spec = spec_for(TAKE_OFFSET + seed)
    start = folder / f"start-{seed}.png"
    Image.fromarray((render(spec, 1, defaults.width, defaults.height)[0] * 255).round()
                    .astype(np.uint8)).save(start)
    parts = []
    for index in range(PARTS):
        raw = {"variant": variant, "prompt": caption(spec, image_mode=True), "seed": seed + 1000 * index,
               "image_path": str(start), "preview": PreviewSettings(enabled=False)}
        request = build_request(raw, defaults).request
        result = engine.generate(request)
        video = write_mp4(result.frames, folder / f"part-{seed}-{index}.mp4", request.fps,
                          Recipe(request).to_dict())
        parts.append(read_frames(video))
        start = folder / f"start-{seed}-{index + 1}.png"
        if start_from == "shot":
            Image.fromarray(assemble(parts, request.fps)[-1]).save(start)
        else:
            last_frame(video).save(start)
    return parts


def measure(parts: list[np.ndarray], fps: int, kwargs: dict[str, Any]) -> dict[str, list[float]]:
    """The figures of one chain for one colour match (see module docstring)."""
    started = time.perf_counter()
    shot = assemble(parts, fps, **kwargs)
    elapsed = time.perf_counter() - started
    tone = lambda frames: frames.reshape(len(frames), -1, 3).astype(np.float64).mean(axis=1)  # noqa: E731
    figures: dict[str, list[float]] = {key: [] for key in KEYS}
    figures["ms"] = [elapsed * 1000]
    end = 0
    for index in range(1, len(parts)):
        end += len(parts[index - 1]) - 1  # the shared frame's index in the shot
        figures["seam"].append(seam_difference(shot[end], shot[end + 1]))
        excursion = np.abs(tone(shot[end + 1: end + 1 + fps]) - tone(shot[end: end + 1])).max(axis=0)
        figures["1st s"].append(float(excursion.mean()))
        figures["pixel"].append(pixel_difference(shot[end], shot[end + 1]))
        figures["own"].append(seam_difference(parts[index - 1][-2], parts[index - 1][-1]))
        figures["copy"].append(seam_difference(shot[end], parts[index][0]))
    figures["drift"].append(float(np.abs(tone(shot[-4:]).mean(axis=0)
                                         - tone(parts[0][-4:]).mean(axis=0)).mean()))
    return figures


def run_variant(variant: str, seeds: int, start_from: str = "part") -> dict[str, dict[str, list[float]]]:
    """Every method's figures over `seeds` chains of one demo variant."""
    from pipelines.engine import Engine
    from pipelines.manager import ModelManager
    from pipelines.request import VariantDefaults
    from pipelines.variants import get_variant

    folder = DEMO / variant
    studio = json.loads((folder / "studio.json").read_text())["defaults"]
    defaults = VariantDefaults.official(get_variant(variant)).updated(studio)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(ModelManager({variant: str(folder)}, Path(tmp), device="cpu", demo_dir=None))
        engine.manager.get(variant).pipeline_for(True).set_progress_bar_config(disable=True)
        for seed in range(seeds):
            parts = chain(engine, defaults, variant, seed, Path(tmp), start_from)
            for name, kwargs in METHODS.items():
                for key, values in measure(parts, defaults.fps, kwargs).items():
                    results.setdefault(name, {}).setdefault(key, []).extend(values)
            print(f"  {variant}: seed {seed} done", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["i2v-a14b", "ti2v-5b"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--start-from", choices=("part", "shot"), default="part",
                        help="what each child starts from: its parent's last frame, or the shot's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusers_logging.disable_progress_bar()
    print(f"{args.seeds} chains of {PARTS} parts per variant, each child started from the "
          f"{args.start_from}'s last frame; figures 0-255, mean (max) over seams")
    for variant in args.variants:
        if not (DEMO / variant / "model_index.json").is_file():
            print(f"{variant}: no demo weights, skipped")
            continue
        started = time.perf_counter()
        results = run_variant(variant, args.seeds, args.start_from)
        print(f"== {variant} ({time.perf_counter() - started:.0f} s)")
        shown = KEYS[:-1]
        print(f"  {'match':18s} " + " ".join(f"{k:>13s}" for k in shown) + f" {'ms/shot':>8s}")
        for name, figures in results.items():
            cells = " ".join(f"{statistics.mean(figures[k]):5.2f} ({max(figures[k]):5.2f})"
                             for k in shown)
            print(f"  {name:18s} {cells} {statistics.median(figures['ms']):8.1f}", flush=True)
        copy = results["none"]["copy"]
        print(f"  the child's frame 0 vs the parent's last frame: {statistics.mean(copy):.2f} "
              f"({max(copy):.2f})", flush=True)


if __name__ == "__main__":
    main()
