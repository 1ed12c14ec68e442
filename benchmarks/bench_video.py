"""MP4 writing: pipelines.video.write_mp4 (PyAV) against diffusers' export_to_video, same frames.

121 frames at 1280x704 (TI2V-5B's 720p clip) of smooth synthetic footage with a moving object and
film-like texture. Runs alternate (diffusers, ours, diffusers, ours, ...) so machine noise hits
both alike; prints medians, the speed-up and what each file is. Target: >= 3x, browser-playable.

export_to_video takes float frames in 0..1 (what a diffusers pipeline returns) and needs
`pip install imageio imageio-ffmpeg`; ours takes uint8, so the studio's own float->uint8 step
(pipelines.engine.to_uint8) is also timed with it.

    python benchmarks/bench_video.py [--runs 3] [--frames 121] [--width 1280] [--height 704]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.engine import to_uint8  # noqa: E402
from pipelines.video import X264_OPTIONS, write_mp4  # noqa: E402


def footage(frames: int, height: int, width: int) -> np.ndarray:
    """Deterministic smooth footage: drifting gradients, a moving red block, low-frequency grain."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    grain = rng.normal(0, 6, (height // 8 + 1, width // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:height, :width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        red = (np.sin((x + 4 * t) / 90) * 0.5 + 0.5) * 200
        green = y / height * 255
        blue = (x * y / (width * height) * 255 + t) % 255
        image = np.stack([red, green, blue], axis=-1) + np.roll(grain, 2 * t, axis=1)
        left = (width // 6 + 6 * t) % (width - width // 10)
        image[height // 3: height // 3 + height // 6, left: left + width // 10] = (240, 30, 30)
        out[t] = np.clip(image + rng.normal(0, 1.5, (height, width, 1)), 0, 255).astype(np.uint8)
    return out


def describe(path: Path) -> str:
    """Codec, profile, pixel format and whether the index comes first (faststart)."""
    data = path.read_bytes()
    faststart = 0 <= data.find(b"moov") < data.find(b"mdat")
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context
        return (f"{codec.name} {codec.profile}, {codec.pix_fmt}, faststart={'yes' if faststart else 'no'}, "
                f"{len(data) / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args()
    try:
        from diffusers.utils import export_to_video
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        sys.exit("export_to_video needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg")

    frames = footage(args.frames, args.height, args.width)
    as_float = frames.astype(np.float32) / 255  # a pipeline's output_type="np"
    meta = {"prompt": "benchmark", "seed": 0}
    times: dict[str, list[float]] = {"diffusers export_to_video": [], "write_mp4 (uint8 in)": [],
                                     "engine to_uint8 + write_mp4": []}
    with tempfile.TemporaryDirectory() as tmp:
        ref, ours = Path(tmp) / "diffusers.mp4", Path(tmp) / "ours.mp4"
        for _ in range(args.runs):
            start = time.perf_counter()
            export_to_video(list(as_float), str(ref), fps=args.fps)
            times["diffusers export_to_video"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_mp4(frames, ours, args.fps, meta)
            times["write_mp4 (uint8 in)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_mp4(to_uint8(as_float), ours, args.fps, meta)
            times["engine to_uint8 + write_mp4"].append(time.perf_counter() - start)
        base = statistics.median(times["diffusers export_to_video"])
        print(f"{args.frames} frames at {args.width}x{args.height}, {args.runs} runs each, "
              f"x264 {X264_OPTIONS}")
        print(f"{'writer':32} {'median s':>9} {'speed-up':>9}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:32} {median:9.2f} {base / median:8.2f}x")
        print(f"diffusers file: {describe(ref)}")
        print(f"our file:       {describe(ours)}")


if __name__ == "__main__":
    main()
