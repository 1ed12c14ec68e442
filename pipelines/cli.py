"""`python app.py generate`: one clip from the command line, no web UI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from .errors import StudioError
from .events import EXPERT_ROLES, Event, PreviewEvent, StepEvent
from .request import PreviewSettings, build_request
from .variants import VARIANTS

STUDIO_VERSION = "0.1.0"
WEIGHTS_ENV = {v: "WAN_STUDIO_WEIGHTS_" + v.upper().replace("-", "_") for v in VARIANTS}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UsageError(f"{message} (see --help)")


def parse_weights(values: Sequence[str]) -> dict[str, str]:
    """`VARIANT=SOURCE` pairs (repeatable) plus WAN_STUDIO_WEIGHTS_* environment variables."""
    weights = {v: os.environ[name] for v, name in WEIGHTS_ENV.items() if os.environ.get(name)}
    for item in values:
        variant, sep, source = item.partition("=")
        if not sep or not source.strip():
            raise UsageError(f"--weights takes VARIANT=SOURCE (a folder or Hub id), got {item!r}.")
        if variant not in VARIANTS:
            raise UsageError(f"--weights names unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")
        weights[variant] = source.strip()
    return weights


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the generate command."""
    p = _Parser(prog="app.py generate", description="Generate one clip without the web UI.")
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--prompt", default="")
    p.add_argument("--negative-prompt", dest="negative_prompt", default=None)
    p.add_argument("--image", dest="image_path", default=None)
    p.add_argument("--weights", action="append", default=[], metavar="VARIANT=SOURCE")
    for name, kind in (("width", int), ("height", int), ("frames", int), ("fps", int),
                       ("steps", int), ("seed", int), ("guidance", float), ("shift", float)):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument("--guidance-low", dest="guidance_low", type=float, default=None)
    p.add_argument("--preview-every", dest="decode_every", type=int, default=0,
                   help="also decode a full-quality preview every N steps (no effect without a UI)")
    p.add_argument("--data-dir", dest="data_dir", default=None)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path)
    return p


class _Progress:
    """A step bar on stderr: step, expert and ETA."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}] {postfix}")

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepEvent):
            self.bar.set_description(f"{event.expert} ({EXPERT_ROLES[event.expert]})", refresh=False)
            self.bar.update(event.index - self.bar.n)
        elif not isinstance(event, PreviewEvent):
            self.bar.set_postfix_str(type(event).__name__.removesuffix("Event").lower())

    def close(self) -> None:
        self.bar.close()


def run(argv: Sequence[str], data_dir: Path) -> dict[str, Any]:
    """Parse, validate, generate and write the MP4; returns the JSON summary."""
    from .engine import Engine
    from .manager import ModelManager
    from .video import write_mp4, write_poster

    args = build_parser().parse_args(argv)
    weights = parse_weights(args.weights)
    manager = ModelManager(weights, cache_dir=data_dir / "cache", device=args.device)
    if args.variant not in manager.available():
        raise UsageError(f"No weights for {args.variant}: pass --weights {args.variant}=FOLDER_OR_HUB_ID "
                         f"(e.g. {VARIANTS[args.variant].hub_repo}).")
    raw = {k: getattr(args, k) for k in ("variant", "prompt", "negative_prompt", "image_path", "width",
                                         "height", "frames", "fps", "steps", "seed", "guidance",
                                         "guidance_low")}
    raw["flow_shift"] = args.shift
    raw["preview"] = PreviewSettings(enabled=False, decode_every=0)
    validated = build_request(raw, manager.defaults_for(args.variant))
    request = validated.request
    manager.get(request.variant)  # load (and check the weights) before the progress bar starts
    for notice in validated.notices:
        print(f"notice: {notice}", file=sys.stderr)
    progress = _Progress(request.steps)
    try:
        result = Engine(manager).generate(request, progress, threading.Event())
    finally:
        progress.close()
    metadata = {"request": request.to_dict(), "weights_source": result.weights_source,
                "studio_version": STUDIO_VERSION}
    out = write_mp4(result.frames, args.out, request.fps, metadata)
    poster = write_poster(result.frames[0], args.out.with_suffix(".jpg"))
    return {"path": str(out), "poster": str(poster), "variant": request.variant, "seed": request.seed,
            "width": request.width, "height": request.height, "frames": request.frames,
            "fps": request.fps, "steps": request.steps, "weights": result.weights_source,
            "notices": list(validated.notices) + list(result.notices),
            "elapsed_s": round(result.elapsed_s, 3)}


def main(argv: Sequence[str], data_dir: Path) -> int:
    """Entry point: 0 on success, 2 on bad input, 1 on a failed run."""
    try:
        summary = run(argv, data_dir)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StudioError as exc:
        from .errors import RequestError, WeightsError

        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (RequestError, WeightsError)) else 1
    print(json.dumps(summary, ensure_ascii=False))
    return 0
