"""Engine overhead: the same tiny pipeline, request and seed through bare diffusers and the engine.

Runs alternate (bare, engine, bare, engine, ...) so machine noise hits both alike; prints the
median of each and their ratio. Target: engine (previews on) / bare <= 1.05.

    python benchmarks/bench_engine.py [--runs 7] [--size 128] [--frames 17] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from pipelines.engine import Engine  # noqa: E402
from pipelines.manager import ModelManager  # noqa: E402
from pipelines.request import PreviewSettings, build_request  # noqa: E402
from tiny_models import save_tiny_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--variant", default="t2v-a14b")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_pipeline(args.variant, Path(tmp) / args.variant)
        manager = ModelManager({args.variant: str(folder)}, Path(tmp) / "cache", device="cpu",
                               demo_dir=None)
        engine = Engine(manager)
        request = build_request(dict(variant=args.variant, prompt="a red ball rolls across a meadow",
                                     width=args.size, height=args.size, frames=args.frames,
                                     steps=args.steps, seed=3, preview=PreviewSettings())).request
        pipe = manager.get(args.variant).pipeline_for(with_image=False)

        def bare() -> None:
            kwargs = dict(prompt=request.prompt, negative_prompt=request.negative_prompt,
                          height=request.height, width=request.width, num_frames=request.frames,
                          num_inference_steps=request.steps, guidance_scale=request.guidance,
                          generator=torch.Generator().manual_seed(request.seed), output_type="np")
            if request.guidance_low is not None:
                kwargs["guidance_scale_2"] = request.guidance_low
            pipe(**kwargs)

        previews = []

        def engine_run() -> None:
            engine.generate(request, lambda e: previews.append(e))

        engine_run()  # warm-up: fits and caches the preview projection once
        bare()
        times: dict[str, list[float]] = {"bare": [], "engine": []}
        for _ in range(args.runs):
            for name, fn in (("bare", bare), ("engine", engine_run)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    bare_median = statistics.median(times["bare"])
    engine_median = statistics.median(times["engine"])
    print(f"{args.variant} {args.size}x{args.size} {args.frames} frames {args.steps} steps, "
          f"{args.runs} alternating runs each (torch threads 2)")
    print("| path | median s | min s | max s |\n|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    pairs = [e / b for b, e in zip(times["bare"], times["engine"])]
    print(f"ratio engine/bare: of medians {engine_median / bare_median:.3f}, "
          f"median of back-to-back pairs {statistics.median(pairs):.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
