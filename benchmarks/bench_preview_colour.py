"""Does the last projected preview have the colours of the final video? Demo weights, CPU.

    nice -n 10 python benchmarks/bench_preview_colour.py [--seeds 16] [--variants t2v-a14b ...]

For each demo variant (TI2V twice: from text, and from a start image), runs `--seeds` takes
through the studio's own `Engine` (studio defaults, previews on), keeps the x0 estimate behind
the LAST projected preview (the one after the final step, as the studio shows it) and the final
video, and scores the preview made from that x0 with each map:

    score = mean over latent frames k and channels c of |preview_k,c - video_k,c|  (0-255)

where preview_k,c is the mean of channel c over preview image k, and video_k,c the mean of
channel c over the video frames latent frame k stands for: frame 0 for k = 0 (the causal Wan
VAE encodes the first frame alone), frames 4k-3 .. 4k for k >= 1 (17 frames -> 5 latent frames).
Also printed: the mean signed difference per channel (preview minus video), which shows a cast.

Maps compared in one run, each on the same x0: "v2", the recipe before issue 25 (least squares
of synthetic clips' latents against the clips themselves, reproduced here); "fit", what
`fit_projection` fits now (against the VAE's decodes); each of them "+ run", recalibrated on the
VAE's decode of that take's first latent frame as the engine does at the last step
(`calibrate_projection`); and "studio", the last preview the engine itself emitted (fit + run).
Takes: seed s (0..N-1) with the prompt of clip spec BENCH_OFFSET + 900 + s, which draws subject,
colour, scene, time of day, tone, light, shot and camera over the demo's whole vocabulary; image
takes start from that spec's first frame rendered by the world. Target: mean <= 6 per variant.
The fit sees only synthetic clips; the calibration sees only the take's own first latent frame,
as it does in the studio; its constants (window, pull, steps) were chosen on takes of other
specs (3,000,000 and up), never on these.
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
from typing import Any, Callable

import numpy as np
import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # loading bars would bury the tables
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusers.utils import logging as diffusers_logging  # noqa: E402

import pipelines.previews as previews  # noqa: E402
from pipelines.previews import LatentRGBProjection  # noqa: E402
from training.captions import caption  # noqa: E402
from training.control_pairs import BENCH_OFFSET  # noqa: E402
from training.data import spec_for  # noqa: E402
from training.world import render  # noqa: E402

DEMO = ROOT / "weights" / "demo"
TAKE_OFFSET = BENCH_OFFSET + 900  # clip specs of the scored takes: no preview setting was chosen on them
RUNS = {  # row name: (variant folder, start from an image)
    "t2v-a14b": ("t2v-a14b", False),
    "i2v-a14b": ("i2v-a14b", True),
    "ti2v-5b (text)": ("ti2v-5b", False),
    "ti2v-5b (image)": ("ti2v-5b", True),
}


def fit_v2(vae: Any) -> LatentRGBProjection:
    """The FIT_VERSION 2 recipe: ridge least squares of synthetic clips' latents against the clips."""
    size, temporal = 96, int(getattr(vae.config, "scale_factor_temporal", None) or 4)
    groups = [previews.calibration_clips(size=size, count=16, frames=1),
              previews.calibration_clips(size=size, count=4, frames=5, seed=previews.CALIBRATION_SEED + 1)]
    xs, ys, spatial = [], [], 8
    for video in groups:
        z = previews._encode_normalized(vae, video)
        spatial = size // z.shape[-1]
        target = previews._block_means((video + 1) / 2, spatial, z.shape[2], temporal)
        xs.append(z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1]).double())
        ys.append(target.permute(0, 2, 3, 4, 1).reshape(-1, 3).double())
    x, y = torch.cat(xs), torch.cat(ys)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    gram = xc.T @ xc / len(x)
    ridge = 0.01 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    weight = torch.linalg.solve(gram + ridge, xc.T @ (y - y_mean) / len(x))
    bias = y_mean - x_mean @ weight
    return LatentRGBProjection(weight.float(), bias.float(), spatial_stride=spatial, temporal_stride=temporal)


MAPS: dict[str, Callable[[Any], LatentRGBProjection]] = {
    "v2": fit_v2,
    "fit": lambda vae: previews.fit_projection(vae),
}


def video_block_means(video: np.ndarray, latent_frames: int, temporal: int = 4) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (latent_frames, 3): mean RGB of the frames each latent frame stands for."""
    per_frame = video.reshape(len(video), -1, 3).astype(np.float64).mean(axis=1)
    blocks = [per_frame[:1]] + [per_frame[1 + (k - 1) * temporal: 1 + k * temporal]
                                for k in range(1, latent_frames)]
    return np.stack([b.mean(axis=0) for b in blocks])


def colour_difference(preview: np.ndarray, video: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean |difference|, signed difference per channel) of per-frame mean RGB, 0-255."""
    ours = preview.reshape(len(preview), -1, 3).astype(np.float64).mean(axis=1)
    diff = ours - video_block_means(video, len(preview))
    return float(np.abs(diff).mean()), diff.mean(axis=0)


def start_image(spec: Any, size: int, folder: Path) -> Path:
    """The spec's first frame, rendered by the world, as a PNG in `folder`."""
    from PIL import Image

    frame = (render(spec, 1, size, size)[0] * 255).round().astype(np.uint8)
    path = folder / f"start-{spec.seed}.png"
    Image.fromarray(frame).save(path)
    return path


def run_variant(name: str, folder: Path, with_image: bool, seeds: int,
                projections: dict[str, LatentRGBProjection] | None = None
                ) -> tuple[dict[str, list[tuple[float, np.ndarray]]], dict[str, LatentRGBProjection]]:
    """Score every map on `seeds` takes of one variant: per-map (score, cast) lists, and the maps."""
    from pipelines.engine import Engine
    from pipelines.events import PreviewEvent
    from pipelines.manager import ModelManager
    from pipelines.request import PreviewSettings, VariantDefaults, build_request
    from pipelines.variants import get_variant

    variant = folder.name
    studio = json.loads((folder / "studio.json").read_text())["defaults"]
    defaults = VariantDefaults.official(get_variant(variant)).updated(studio)
    recorded: list[torch.Tensor] = []
    original = previews.preview_frames

    def recording(projection: LatentRGBProjection, latents: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        recorded.append(latents.detach().clone())
        return original(projection, latents, *args, **kwargs)

    results: dict[str, list[tuple[float, np.ndarray]]] = {}
    calibrations: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(ModelManager({variant: str(folder)}, Path(tmp), device="cpu", demo_dir=None))
        loaded = engine.manager.get(variant)
        loaded.pipeline_for(with_image).set_progress_bar_config(disable=True)
        vae = loaded.pipe.vae
        if projections is None:
            projections = {}
            for map_name, fit in MAPS.items():
                started = time.perf_counter()
                projections[map_name] = fit(vae)
                print(f"  {name}: fitted {map_name} map in {time.perf_counter() - started:.2f} s", flush=True)
        previews.preview_frames = recording  # the engine imports it at each run
        try:
            for seed in range(seeds):
                spec = spec_for(TAKE_OFFSET + seed)
                raw = {"variant": variant, "prompt": caption(spec, image_mode=with_image), "seed": seed,
                       "preview": PreviewSettings()}
                if with_image:
                    raw["image_path"] = str(start_image(spec, studio["width"], Path(tmp)))
                events: list[PreviewEvent] = []
                request = build_request(raw, defaults).request
                result = engine.generate(request, lambda e: events.append(e) if isinstance(e, PreviewEvent) else None)
                last = events[-1]
                assert last.index == last.total and not last.decoded
                recorded.clear()
                shown = last.frames  # renders it, through `recording`
                latents = recorded[-1]
                for map_name, projection in projections.items():
                    for label, used in ((map_name, projection),
                                        (f"{map_name} + run", timed(calibrations, previews.calibrate_projection,
                                                                    projection, vae, latents))):
                        frames = original(used, latents, out_size=(request.width, request.height))
                        results.setdefault(label, []).append(colour_difference(frames, result.frames))
                results.setdefault("studio", []).append(colour_difference(shown, result.frames))
        finally:
            previews.preview_frames = original
    print(f"  {name}: recalibrating a map (one first-frame decode) took {statistics.median(calibrations) * 1000:.0f} ms"
          " median", flush=True)
    return results, projections


def timed(seconds: list[float], fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), its wall time appended to `seconds`."""
    started = time.perf_counter()
    out = fn(*args)
    seconds.append(time.perf_counter() - started)
    return out


def summary(rows: list[tuple[float, np.ndarray]]) -> str:
    """mean / median / max of the scores, and the mean cast per channel."""
    scores = [s for s, _ in rows]
    cast = np.mean([c for _, c in rows], axis=0)
    return (f"{statistics.mean(scores):6.2f} {statistics.median(scores):6.2f} {max(scores):6.2f}"
            f"   ({cast[0]:+5.1f} {cast[1]:+5.1f} {cast[2]:+5.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--demo-dir", type=Path, default=DEMO)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusers_logging.disable_progress_bar()
    print(f"{args.seeds} takes per variant (seeds 0..{args.seeds - 1}); per map: mean, median, max of "
          "|preview - video| of per-frame mean RGB (0-255), then the mean cast (R G B, preview - video)")
    fitted: dict[str, dict[str, LatentRGBProjection]] = {}
    for name in args.variants:
        folder_name, with_image = RUNS[name]
        folder = args.demo_dir / folder_name
        if not (folder / "model_index.json").is_file():
            print(f"{name}: no demo weights in {folder}, skipped")
            continue
        started = time.perf_counter()
        results, fitted[folder_name] = run_variant(name, folder, with_image, args.seeds, fitted.get(folder_name))
        print(f"== {name} ({time.perf_counter() - started:.0f} s)")
        for map_name, rows in results.items():
            print(f"  {map_name:10s} {summary(rows)}", flush=True)


if __name__ == "__main__":
    main()
