"""`python app.py generate`: one clip from the command line, no web UI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .errors import StudioError
from .recipe import Recipe, file_sha256, weights_label
from .events import EXPERT_ROLES, Event, PreviewEvent, StepEvent
from .presets import PRESET_SOURCE_ENV, PRESETS
from .profiles import PROFILE_ENV, PROFILES
from .prompting import VOCABULARY, CinematicControls, compose_prompt
from .request import ATTENTION_BACKENDS, CACHES, IMAGE_FITS, PreviewSettings, build_request
from .variants import VARIANTS

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


CONTROL_OPTIONS = tuple(VOCABULARY)  # light_source, ..., camera_movement, style, effect


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the generate command; every option says what it does in --help."""
    p = _Parser(prog="app.py generate", description="Generate one clip without the web UI.")
    p.add_argument("--variant", required=True, choices=list(VARIANTS),
                   help="which Wan2.2 model: " + ", ".join(VARIANTS))
    p.add_argument("--prompt", default="", help="the shot: subject, scene, motion")
    p.add_argument("--negative-prompt", dest="negative_prompt", default=None,
                   help="what to avoid (default: the official Chinese negative prompt)")
    p.add_argument("--image", dest="image_path", default=None,
                   help="start image (required for i2v-a14b, optional for ti2v-5b)")
    p.add_argument("--image-fit", dest="image_fit", default=None, choices=IMAGE_FITS,
                   help="fit: keep the image's shape at about the requested area (default); "
                        "crop: fill the requested size exactly")
    p.add_argument("--weights", action="append", default=[], metavar="VARIANT=SOURCE",
                   help="a local diffusers folder or Hub repo id for a variant (repeatable)")
    sampling = {"width": "video width in pixels (snapped to 16 or 32)",
                "height": "video height in pixels (snapped to 16 or 32)",
                "frames": "number of frames (snapped to 4n+1)", "fps": "frames per second of the MP4",
                "steps": "denoising steps", "seed": "random seed (default: a random one)",
                "guidance": "guidance scale (the high-noise expert's on A14B)",
                "shift": "flow shift of the scheduler"}
    for name, kind in (("width", int), ("height", int), ("frames", int), ("fps", int),
                       ("steps", int), ("seed", int), ("guidance", float), ("shift", float)):
        p.add_argument(f"--{name}", type=kind, default=None, help=sampling[name])
    p.add_argument("--guidance-low", dest="guidance_low", type=float, default=None,
                   help="guidance scale of the low-noise expert (A14B only)")
    for name in CONTROL_OPTIONS:
        label = name.replace("_", " ")
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="TERM",
                       help=f"{label}, added to the prompt: " + ", ".join(VOCABULARY[name]))
    p.add_argument("--lora", dest="loras", action="append", default=[],
                   metavar="PATH_OR_ID[:high=S,low=S]",
                   help="a LoRA: a file in the LoRA folder, a path or a Hub id, with a strength per "
                        "expert (SOURCE:S for both); repeatable, e.g. one for each expert of a pair")
    p.add_argument("--lora-dir", dest="lora_dir", type=Path, default=None,
                   help="the LoRA folder bare names are looked up in (default: DATA_DIR/loras)")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="a step-distill preset: its LoRA pair, steps, guidance 1 and shift")
    p.add_argument("--preset-source", dest="preset_source", default=None,
                   help="folder or Hub repo holding the preset's LoRA files (also "
                        f"{PRESET_SOURCE_ENV}; default: the Hub repo the preset names)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="memory profile (default: chosen from this machine's GPU memory and RAM; "
                        f"also {PROFILE_ENV}): " + "; ".join(f"{n}: {pr.summary}" for n, pr in PROFILES.items()))
    p.add_argument("--cache", default=None, choices=CACHES,
                   help="a step cache on each expert (off by default); magcache needs --mag-ratios-*")
    p.add_argument("--cache-threshold", dest="cache_threshold", type=float, default=None,
                   help="threshold of the first-block or magcache cache (default: diffusers')")
    p.add_argument("--cache-interval", dest="cache_interval", type=int, default=None,
                   help="taylorseer: steps between full computations (default 5)")
    p.add_argument("--mag-ratios-high", dest="mag_ratios_high", default=None, metavar="R1,R2,...",
                   help="magcache ratios calibrated on the high-noise (or only) expert")
    p.add_argument("--mag-ratios-low", dest="mag_ratios_low", default=None, metavar="R1,R2,...",
                   help="magcache ratios calibrated on the low-noise expert")
    p.add_argument("--compile", action="store_true",
                   help="compile the experts' repeated blocks with torch.compile (slow first take)")
    p.add_argument("--attention", default=None, choices=ATTENTION_BACKENDS,
                   help="diffusers attention backend (default native; falls back to native when the "
                        "kernel is missing)")
    p.add_argument("--preview-every", dest="decode_every", type=int, default=0,
                   help="also decode a full-quality preview every N steps (no effect without a UI)")
    p.add_argument("--decode-latents", dest="decode_latents", type=Path, default=None,
                   help="finish a take whose decode failed: decode the latents file it saved")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="where the Hub cache, LoRA folder and preview maps live")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path, help="the MP4 to write (a poster JPEG goes beside it)")
    return p


def _ratios(text: str | None, option: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} takes numbers separated by commas, got {text!r}.") from None


def _controls(args: argparse.Namespace) -> CinematicControls:
    """The cinematic controls given on the command line."""
    try:
        return CinematicControls.from_dict({name: getattr(args, name) for name in CONTROL_OPTIONS})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _prompt(args: argparse.Namespace) -> str:
    """The user's text, then the chosen cinematic terms (camera movement first with an image)."""
    return compose_prompt(args.prompt or "", _controls(args), image_mode=bool(args.image_path))


def check_out(out: Path) -> Path:
    """Refuse, before anything runs, an --out that cannot take the MP4: one line saying why."""
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out must name an .mp4 file, got {out.name or str(out)!r}.")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the .mp4 file to write inside it.")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"--out: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out: cannot write in {folder}; choose a folder you can write to.")
    return out


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
    check_out(args.out)
    weights = parse_weights(args.weights)
    manager = ModelManager(weights, cache_dir=data_dir / "cache", device=args.device,
                           profile=args.profile, lora_dir=args.lora_dir or data_dir / "loras",
                           preset_source=args.preset_source)
    if args.variant not in manager.available():
        raise UsageError(f"No weights for {args.variant}: pass --weights {args.variant}=FOLDER_OR_HUB_ID "
                         f"(e.g. {VARIANTS[args.variant].hub_repo}).")
    raw = {k: getattr(args, k) for k in ("variant", "negative_prompt", "image_path", "width",
                                         "height", "frames", "fps", "steps", "seed", "guidance",
                                         "guidance_low", "image_fit", "preset", "loras")}
    raw["prompt"] = _prompt(args)
    raw["flow_shift"] = args.shift
    raw["preview"] = PreviewSettings(enabled=False, decode_every=0)
    raw["speed"] = {"cache": args.cache or "none", "cache_threshold": args.cache_threshold,
                    "cache_interval": args.cache_interval, "compile": args.compile,
                    "attention": args.attention or "native",
                    "mag_ratios_high": _ratios(args.mag_ratios_high, "--mag-ratios-high"),
                    "mag_ratios_low": _ratios(args.mag_ratios_low, "--mag-ratios-low")}
    validated = build_request(raw, manager.defaults_for(args.variant))
    request = validated.request
    manager.resolve_loras(request)  # a missing LoRA file is bad input: say so before loading
    _quiet_loading_bars()
    loaded = manager.get(request.variant)  # load (and check the weights) before the progress bar
    print(f"profile: {loaded.profile.name} ({loaded.profile.summary})", file=sys.stderr)
    for note in loaded.notes:
        print(f"profile: {note}", file=sys.stderr)
    for notice in validated.notices:
        print(f"notice: {notice}", file=sys.stderr)
    engine = Engine(manager)
    if args.decode_latents is not None:
        result = _decode_saved(engine, args.decode_latents, request)
    else:
        progress = _Progress(request.steps)
        try:
            result = engine.generate(request, progress, threading.Event())
        except StudioError as exc:
            latents = getattr(exc, "latents", None)
            if latents is None:
                raise
            from .decode import save_latents

            kept = save_latents(args.out.with_suffix(".latents.safetensors"), latents, request.to_json())
            raise StudioError(f"{exc} The latents are saved in {kept}: finish with the same "
                              f"command plus --decode-latents {kept}.") from None
        finally:
            progress.close()
    # The studio's recipe shape: what made the clip, with no path in it (the start image by hash).
    recipe = Recipe(request, user_prompt=(args.prompt or "").strip(), controls=_controls(args),
                    start_image=file_sha256(args.image_path) if args.image_path else None)
    recipe = recipe.ran_with(weights=weights_label(result.weights_source,
                                                   manager.is_demo(request.variant)),
                             profile=result.profile, loras=tuple(asdict(r) for r in result.loras))
    out = write_mp4(result.frames, args.out, request.fps, recipe.to_dict())
    poster = write_poster(result.frames[0], args.out.with_suffix(".jpg"))
    return {"path": str(out), "poster": str(poster), "variant": request.variant, "seed": request.seed,
            "width": request.width, "height": request.height, "frames": request.frames,
            "fps": request.fps, "steps": request.steps, "weights": result.weights_source,
            "profile": result.profile, "preset": result.preset,
            "loras": [asdict(r) for r in result.loras],
            "notices": list(validated.notices) + list(result.notices),
            "elapsed_s": round(result.elapsed_s, 3)}


def _quiet_loading_bars() -> None:
    """Keep stderr to the step bar and the notices: no per-component loading bars."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _decode_saved(engine: Any, path: Path, request: Any) -> Any:
    """Decode latents a failed take saved; the take's own request is the one in the file."""
    from .decode import load_latents
    from .request import GenerationRequest

    latents, stored = load_latents(path)
    saved = GenerationRequest.from_dict(stored)
    if saved.variant != request.variant:
        raise UsageError(f"{path.name} holds a {saved.variant} take; run it with --variant {saved.variant}.")
    return engine.decode_again(saved, latents)


def main(argv: Sequence[str], data_dir: Path) -> int:
    """Entry point: 0 on success, 2 on bad input or settings, 1 on a failed run."""
    try:
        summary = run(argv, data_dir)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StudioError as exc:
        from .errors import ProfileError, RequestError, WeightsError
        from .loras import LoraError

        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (RequestError, WeightsError, ProfileError, LoraError)) else 1
    print(json.dumps(summary, ensure_ascii=False))
    return 0
