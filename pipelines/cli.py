"""`python app.py generate`: one clip from the command line, no web UI.

Besides one take: `--last-image` ends an i2v-a14b take on a chosen frame, `--variations N` makes N
takes of one recipe with consecutive seeds (OUT-1.mp4 ... OUT-N.mp4, the model loaded once), and
`--extend TAKE.mp4` continues a studio MP4 from its last frame and writes the joined longer shot.
Every take or shot written prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import StudioError
from .recipe import MAX_PARTS, Recipe, file_sha256, shot_parts, weights_label
from .events import EXPERT_ROLES, Event, PreviewEvent, StepEvent
from .presets import PRESET_SOURCE_ENV, PRESETS
from .profiles import PROFILE_ENV, PROFILES
from .prompting import VOCABULARY, CinematicControls, compose_prompt
from .request import (ATTENTION_BACKENDS, CACHES, IMAGE_FITS, MAX_VARIATIONS, MIN_VARIATIONS,
                      GenerationRequest, PreviewSettings, build_request, variation_seeds)
from .variants import VARIANTS, continue_variant

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
    # not required by argparse: --extend picks the studio's continue variant when it is left out
    p.add_argument("--variant", default=None, choices=list(VARIANTS),
                   help="which Wan2.2 model: " + ", ".join(VARIANTS) + " (required, except with "
                        "--extend, which defaults to the variant the studio's Continue picks)")
    p.add_argument("--prompt", default="", help="the shot: subject, scene, motion")
    p.add_argument("--negative-prompt", dest="negative_prompt", default=None,
                   help="what to avoid (default: the official Chinese negative prompt)")
    p.add_argument("--image", dest="image_path", default=None,
                   help="start image (required for i2v-a14b, optional for ti2v-5b)")
    p.add_argument("--last-image", dest="last_image_path", default=None, metavar="PATH",
                   help="end image: the take ends on this frame (i2v-a14b only, with --image)")
    p.add_argument("--variations", type=int, default=None, metavar="N",
                   help=f"make N takes ({MIN_VARIATIONS}-{MAX_VARIATIONS}) of the same recipe with "
                        "consecutive seeds from --seed (random when left out), loading the model "
                        "once; --out take.mp4 writes take-1.mp4 ... take-N.mp4")
    p.add_argument("--extend", type=Path, default=None, metavar="TAKE.mp4",
                   help="continue a Wan Studio MP4 (a take or a joined shot) from its last frame "
                        "with its prompt, controls, size, frames and fps (options given here win), "
                        "and write the joined, colour-matched longer shot to --out")
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


def _controls(args: argparse.Namespace, base: CinematicControls | None = None) -> CinematicControls:
    """The cinematic controls given on the command line, over `base`'s (an extended take's)."""
    inherited = base.to_dict() if base is not None else {}
    try:
        return CinematicControls.from_dict({
            name: getattr(args, name) if getattr(args, name) is not None else inherited.get(name)
            for name in CONTROL_OPTIONS})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _prompt(text: str, controls: CinematicControls, image_mode: bool) -> str:
    """The user's text, then the chosen cinematic terms (camera movement first with an image)."""
    return compose_prompt(text, controls, image_mode=image_mode)


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


def variation_path(out: Path, index: int) -> Path:
    """Where take `index` (1-based) of a batch of variations goes: take.mp4 -> take-2.mp4."""
    return out.with_name(f"{out.stem}-{index}{out.suffix}")


def _check_modes(args: argparse.Namespace) -> None:
    """Refuse, before anything loads, options that do not go together: one line saying why."""
    if args.variant is None and args.extend is None:
        raise UsageError("the following arguments are required: --variant (see --help)")
    if args.extend is not None:
        if args.image_path:
            raise UsageError("--extend starts from the take's last frame, so it takes no --image.")
        if args.variations is not None:
            raise UsageError("--extend and --variations do not go together: extend one take at a time.")
    if args.last_image_path and not args.image_path and args.extend is None \
            and args.variant and VARIANTS[args.variant].takes_last_image:
        # the engine's sentence says "upload one", which is the studio's wording
        raise UsageError("--last-image needs a start image too: add --image.")
    if args.variations is not None:
        if args.decode_latents is not None:
            raise UsageError("--decode-latents finishes one take: run it without --variations, "
                             "with that take's --seed and --out.")
        # checked here, before any weights load, and named as the option (the seed is checked by
        # build_request; variation_seeds checks the count again)
        if not MIN_VARIATIONS <= args.variations <= MAX_VARIATIONS:
            raise UsageError(f"--variations must be between {MIN_VARIATIONS} and {MAX_VARIATIONS}, "
                             f"got {args.variations}.")
        for index in range(1, args.variations + 1):
            check_out(variation_path(args.out, index))


@dataclass(frozen=True)
class _Parent:
    """The take or shot being extended: its embedded settings and every part's recipe."""

    path: Path
    settings: dict[str, Any]
    parts: list[Recipe]

    @property
    def newest(self) -> Recipe:
        """The part the extension continues (a shot's last part; a take's own recipe)."""
        return self.parts[-1]


def read_parent(path: Path) -> _Parent:
    """The recipe(s) embedded in an MP4 to extend; a UsageError when it carries none we can read."""
    from .video import VideoFileError, read_settings

    if not path.is_file():
        raise UsageError(f"--extend: no file at {path}.")
    try:
        settings = read_settings(path)
    except VideoFileError as exc:  # not a video, or a video with no studio settings
        raise UsageError(f"--extend: {exc}") from None
    try:
        parts = shot_parts(settings)
    except StudioError as exc:  # a shot of a newer format, or a malformed parts list
        raise UsageError(f"--extend: {exc}") from None
    except Exception:  # noqa: BLE001 - someone else's JSON comment can fail in any constructor
        raise UsageError(f"--extend: {path.name} has settings that are not a Wan Studio recipe, "
                         "so it cannot be extended.") from None
    if len(parts) >= MAX_PARTS:
        raise UsageError(f"--extend: {path.name} already joins {len(parts)} parts; a shot holds at "
                         f"most {MAX_PARTS}.")
    return _Parent(path, settings, parts)


def _extend_variant(args: argparse.Namespace, available: list[str]) -> str:
    """The variant that animates the parent's last frame: --variant, else the studio's choice."""
    variant = args.variant or continue_variant(available)
    if not VARIANTS[variant].continues_takes:
        takers = " or ".join(v.id for v in VARIANTS.values() if v.continues_takes)
        raise UsageError(f"--extend animates the take's last frame, so it needs a variant that takes "
                         f"a start image ({takers}); {variant} makes video from text only.")
    return variant


def run(argv: Sequence[str], data_dir: Path,
        emit: Callable[[dict[str, Any]], None] = lambda summary: None) -> list[dict[str, Any]]:
    """Parse, validate, generate and write the MP4(s); `emit`s and returns one summary per MP4."""
    from .engine import Engine
    from .manager import ModelManager

    args = build_parser().parse_args(argv)
    check_out(args.out)
    _check_modes(args)
    parent = read_parent(args.extend) if args.extend is not None else None
    weights = parse_weights(args.weights)
    manager = ModelManager(weights, cache_dir=data_dir / "cache", device=args.device,
                           profile=args.profile, lora_dir=args.lora_dir or data_dir / "loras",
                           preset_source=args.preset_source)
    variant = _extend_variant(args, manager.available()) if parent else args.variant
    if variant not in manager.available():
        raise UsageError(f"No weights for {variant}: pass --weights {variant}=FOLDER_OR_HUB_ID "
                         f"(e.g. {VARIANTS[variant].hub_repo}).")
    with ExitStack() as stack:
        raw = {k: getattr(args, k) for k in ("negative_prompt", "image_path", "last_image_path",
                                             "width", "height", "frames", "fps", "steps", "seed",
                                             "guidance", "guidance_low", "image_fit", "preset",
                                             "loras")}
        raw["variant"] = variant
        user_prompt = (args.prompt or "").strip()
        controls = _controls(args)
        if parent is not None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wan-extend-")))
            user_prompt, controls = _continue_from(parent, args, raw, scratch)
        raw["prompt"] = _prompt(user_prompt, controls, image_mode=bool(raw["image_path"]))
        raw["flow_shift"] = args.shift
        raw["preview"] = PreviewSettings(enabled=False, decode_every=0)
        raw["speed"] = {"cache": args.cache or "none", "cache_threshold": args.cache_threshold,
                        "cache_interval": args.cache_interval, "compile": args.compile,
                        "attention": args.attention or "native",
                        "mag_ratios_high": _ratios(args.mag_ratios_high, "--mag-ratios-high"),
                        "mag_ratios_low": _ratios(args.mag_ratios_low, "--mag-ratios-low")}
        validated = build_request(raw, manager.defaults_for(variant))
        request = validated.request
        manager.resolve_loras(request)  # a missing LoRA file is bad input: say so before loading
        _quiet_loading_bars()
        loaded = manager.get(request.variant)  # load (and check the weights) before the progress bar
        print(f"profile: {loaded.profile.name} ({loaded.profile.summary})", file=sys.stderr)
        for note in loaded.notes:
            print(f"profile: {note}", file=sys.stderr)
        for notice in validated.notices:
            print(f"notice: {notice}", file=sys.stderr)
        engine = Engine(manager)  # one engine, one loaded model, for every take below
        take = _TakeMaker(engine, manager, args, user_prompt, controls)
        summaries: list[dict[str, Any]] = []
        if parent is not None:
            child = take.make(request, scratch / "child.mp4", latents_beside=args.out)
            summaries.append(_assemble(parent, child, args.out, validated.notices))
            emit(summaries[-1])
        elif args.variations is not None:
            seeds = variation_seeds(request.seed, args.variations)
            for index, seed in enumerate(seeds, start=1):
                out = variation_path(args.out, index)
                hint = f"the same command with --seed {seed} --out {out} instead of --variations"
                made = take.make(replace(request, seed=seed), out, resume_hint=hint)
                summaries.append(_summary(made, validated.notices))
                emit(summaries[-1])
        else:
            summaries.append(_summary(take.make(request, args.out), validated.notices))
            emit(summaries[-1])
        return summaries


def _continue_from(parent: _Parent, args: argparse.Namespace, raw: dict[str, Any],
                   scratch: Path) -> tuple[str, CinematicControls]:
    """Fill `raw` for an extension: the parent's last frame as the start image, and what the
    parent's newest part carries wherever the command line leaves a value out."""
    from .video import last_frame

    recipe = parent.newest
    start = scratch / "last-frame.png"
    frame = last_frame(parent.path)
    frame.save(start)
    raw["image_path"] = str(start)
    # the frame is the shot as the file shows it, so its own size keeps the shot's shape (a
    # shot's parts are fitted to its first part's size, which a newest part may not share)
    raw["width"] = args.width if args.width is not None else frame.width
    raw["height"] = args.height if args.height is not None else frame.height
    for name in ("frames", "negative_prompt"):
        if raw.get(name) is None:
            raw[name] = getattr(recipe.request, name)
    if raw.get("fps") is None:  # the shot plays at its first part's rate: no retiming needed
        raw["fps"] = parent.parts[0].request.fps
    # sampling (steps, guidance, shift, seed), LoRAs, presets and speed levers are this run's, as
    # in the studio's Continue: they belong to the variant and files at hand, not to the parent
    user_prompt = (args.prompt or "").strip() or recipe.user_prompt
    return user_prompt, _controls(args, recipe.controls)


@dataclass
class _Made:
    """One take written: its request, the run's result, recipe and files."""

    request: GenerationRequest
    result: Any
    recipe: Recipe
    path: Path
    poster: Path


class _TakeMaker:
    """Generates takes on one engine (the model stays loaded between them) and writes each MP4."""

    def __init__(self, engine: Any, manager: Any, args: argparse.Namespace, user_prompt: str,
                 controls: CinematicControls) -> None:
        self.engine, self.manager, self.args = engine, manager, args
        self.user_prompt, self.controls = user_prompt, controls

    def make(self, request: GenerationRequest, out: Path, *, latents_beside: Path | None = None,
             resume_hint: str = "the same command") -> _Made:
        """Generate (or decode --decode-latents) one take and write its MP4 and poster."""
        from .video import write_mp4, write_poster

        if self.args.decode_latents is not None:
            result = _decode_saved(self.engine, self.args.decode_latents, request)
        else:
            result = self._generate(request, latents_beside or out, resume_hint)
        # The studio's recipe shape: what made the clip, with no path in it (images by hash).
        recipe = Recipe(request, user_prompt=self.user_prompt, controls=self.controls,
                        start_image=file_sha256(request.image_path) if request.image_path else None,
                        end_image=(file_sha256(request.last_image_path)
                                   if request.last_image_path else None))
        recipe = recipe.ran_with(weights=weights_label(result.weights_source,
                                                       self.manager.is_demo(request.variant)),
                                 profile=result.profile, loras=tuple(asdict(r) for r in result.loras))
        path = write_mp4(result.frames, out, request.fps, recipe.to_dict())
        poster = write_poster(result.frames[0], out.with_suffix(".jpg"))
        return _Made(request, result, recipe, path, poster)

    def _generate(self, request: GenerationRequest, out: Path, resume_hint: str) -> Any:
        progress = _Progress(request.steps)
        try:
            return self.engine.generate(request, progress, threading.Event())
        except StudioError as exc:
            latents = getattr(exc, "latents", None)
            if latents is None:
                raise
            from .decode import save_latents

            kept = save_latents(out.with_suffix(".latents.safetensors"), latents, request.to_json())
            raise StudioError(f"{exc} The latents are saved in {kept}: finish with {resume_hint} "
                              f"plus --decode-latents {kept}.") from None
        finally:
            progress.close()


def _summary(made: _Made, notices: Sequence[str]) -> dict[str, Any]:
    """The JSON line of one take written."""
    request, result = made.request, made.result
    return {"path": str(made.path), "poster": str(made.poster), "variant": request.variant,
            "seed": request.seed, "width": request.width, "height": request.height,
            "frames": request.frames, "fps": request.fps, "steps": request.steps,
            "weights": result.weights_source, "profile": result.profile, "preset": result.preset,
            "loras": [asdict(r) for r in result.loras],
            "notices": list(notices) + list(result.notices),
            "elapsed_s": round(result.elapsed_s, 3)}


def _assemble(parent: _Parent, child: _Made, out: Path, notices: Sequence[str]) -> dict[str, Any]:
    """Join the parent and its new part into `out` and say how well the seam matched."""
    from .extend import assemble_mp4, fit_frames, retime, seam_difference
    from .video import read_frames, write_poster

    assemble_mp4([parent.path, child.path], out, [parent.settings, child.recipe], match="affine")
    shot = read_frames(out)
    before = read_frames(parent.path)
    # the seam as the unmatched shot would show it: the parent's last frame, then the child's
    # frame 1 (its frame 0 is the shared frame, counted once), at the shot's rate and size
    raw_child = fit_frames(retime(read_frames(child.path), child.request.fps,
                                  parent.parts[0].request.fps), before.shape[2], before.shape[1])
    seam = len(before) - 1
    write_poster(shot[0], out.with_suffix(".jpg"))
    summary = _summary(child, notices)
    summary.update(path=str(out), poster=str(out.with_suffix(".jpg")), extended=str(parent.path),
                   parts=len(parent.parts) + 1, frames=len(shot), parent_frames=len(before),
                   child_frames=child.request.frames,
                   seam_difference={"before": round(seam_difference(before[-1], raw_child[1]), 2),
                                    "after": round(seam_difference(shot[seam], shot[seam + 1]), 2)})
    return summary


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
        # one JSON line per MP4 written, as soon as it is written: a batch of variations that
        # fails half-way has already said which takes exist
        run(argv, data_dir, emit=lambda summary: print(json.dumps(summary, ensure_ascii=False),
                                                       flush=True))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StudioError as exc:
        from .errors import ProfileError, RequestError, WeightsError
        from .loras import LoraError

        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (RequestError, WeightsError, ProfileError, LoraError)) else 1
    return 0
