"""Preview cost per denoising step at the real latent shapes, on this CPU.

For each shape: the x0 estimate that `capture_x0` adds to a scheduler step, and `preview_frames`
(project every latent frame to RGB, resize to a longest side of 256, convert to uint8). The
baseline is one plain copy of the latents (`clone`), the cheapest thing a step can do to them.
Target: preview_frames median <= 30 ms. Wall and CPU time are both printed (see timed_ms).

    python benchmarks/bench_previews.py [--runs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipelines.previews import LatentRGBProjection, preview_frames  # noqa: E402

SHAPES = {  # name: (channels, latent frames, latent h, latent w, video (width, height), stride)
    "T2V-A14B 720p 81f": (16, 21, 90, 160, (1280, 720), 8),
    "TI2V-5B 720p 121f": (48, 31, 44, 80, (1280, 704), 16),
}


def timed_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads of this process) of `fn`, in ms.

    CPU time is what this code costs; wall time also counts waiting for cores that other
    processes hold, which on a shared machine can be several times more.
    """
    fn()
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch threads: {args.threads}, {args.runs} runs each; median wall ms (median CPU ms)")
    print(f"{'shape':18} {'latents':13} {'preview':12} {'clone':>14} {'x0 estimate':>14} "
          f"{'preview_frames':>15} {'preview/clone':>13}")
    for name, (channels, frames, h, w, out_size, stride) in SHAPES.items():
        latents = torch.randn(1, channels, frames, h, w, generator=generator)
        velocity = torch.randn(latents.shape, generator=generator)
        projection = LatentRGBProjection(torch.randn(channels, 3, generator=generator) * 0.1,
                                         torch.full((3,), 0.5), spatial_stride=stride)
        clone = timed_ms(latents.clone, args.runs)
        # the same expression capture_x0 evaluates inside each scheduler step
        x0 = timed_ms(lambda: torch.sub(latents.float(), velocity.float(), alpha=0.7), args.runs)
        preview = timed_ms(lambda: preview_frames(projection, latents, 256, out_size), args.runs)
        shape = preview_frames(projection, latents, 256, out_size).shape
        cells = " ".join(f"{m:7.1f} ({c:4.1f})" for m, c in (clone, x0, preview))
        print(f"{name:18} {'x'.join(map(str, latents.shape[1:])):13} {'x'.join(map(str, shape)):12} "
              f"{cells} {preview[0] / clone[0]:12.1f}x")


if __name__ == "__main__":
    main()
