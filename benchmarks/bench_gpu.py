"""Wan2.2 on one real GPU with random full-size weights: speed targets, overhead, memory, decode.

No real weights anywhere: every model is built from the official configs (pipelines.memory)
with random weights directly on the GPU, so the shapes, kernels, transfers and memory are the
real ones and the videos are noise. In one run, side by side, it measures:

- per-step time of the engine against bare diffusers on the same pipeline (target <= 1.02);
- a 4-step guidance-1 take end to end with a distill preset (random rank-64 LoRA files):
  TI2V-5B 720p 121 frames (target <= 25 s) and T2V-A14B 480p 81 frames, 2+2 steps with the
  expert handoff under model offload (target <= 40 s); the first take (LoRA load) and the next;
- the expert handoff time, read from the step times around the boundary;
- peak GPU memory per profile against pipelines.profiles.estimate (target within 10%);
- VAE decode time and peak, tiled and untiled, at 480p and 720p;
- the official 40/50-step runs at 480p and 720p, extrapolated from measured steps, encode and
  decode (a whole official A14B run at 720p takes over 15 minutes).

Sections run in order until the time budget is spent; what was skipped is listed. Results go
to OUT_DIR/bench_gpu.json and OUT_DIR/bench_gpu.md.

    python benchmarks/bench_gpu.py [--out-dir benchmarks/out/gpu] [--budget-s 420]
    python benchmarks/bench_gpu.py --dry-run     # CPU, tiny shapes, the same code paths, seconds
    python benchmarks/bench_gpu.py --estimates   # the estimate table only (CPU, shapes only)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from pipelines.decode import decode_latents  # noqa: E402
from pipelines.engine import Engine  # noqa: E402
from pipelines.events import StepEvent  # noqa: E402
from pipelines.manager import ModelManager  # noqa: E402
from pipelines.memory import (GIB, REAL_SHAPES, ModelShapes, frozen, vae_decode_peak,  # noqa: E402
                              weight_bytes)
from pipelines.presets import get_preset  # noqa: E402
from pipelines.profiles import PROFILES, estimate  # noqa: E402
from pipelines.request import PreviewSettings, build_request  # noqa: E402
from pipelines.variants import get_variant  # noqa: E402

TARGET_RATIO = 1.02
TARGET_MEMORY = 0.10
TARGETS_S = {"ti2v-5b": 25.0, "t2v-a14b": 40.0}

TINY_TRANSFORMER = frozen(dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=12,
                               text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=1024))
TINY_ENCODER = frozen(dict(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                           relative_attention_num_buckets=8))
TINY_SHAPES = {
    "t2v-a14b": ModelShapes(TINY_TRANSFORMER, 16, 16, 2, TINY_ENCODER,
                            frozen(dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                        temperal_downsample=[False, True, True])), 8),
    "ti2v-5b": ModelShapes(TINY_TRANSFORMER, 48, 48, 1, TINY_ENCODER,
                           frozen(dict(base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                       temperal_downsample=[False, True, True], in_channels=12,
                                       out_channels=12, is_residual=True, patch_size=2,
                                       scale_factor_spatial=16)), 16, True),
}


@dataclass
class Row:
    """One measured figure, with what it is compared against."""

    section: str
    variant: str
    measure: str
    size: str
    value: float | None
    unit: str
    reference: float | None = None  # the target, the estimate or the baseline
    ratio: float | None = None
    ok: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class Mode:
    """What a run uses: real shapes on CUDA, or tiny shapes on the CPU (--dry-run)."""

    dry: bool
    device: str
    dtype: Any
    sizes: dict[str, dict[str, tuple[int, int, int]]]  # variant -> name -> (width, height, frames)
    ratio_steps: int
    lora_rank: int

    def shapes(self, variant: str) -> ModelShapes:
        """The model shapes of a variant in this mode."""
        return TINY_SHAPES[variant] if self.dry else REAL_SHAPES[variant]


REAL = Mode(False, "cuda", torch.bfloat16,
            {"t2v-a14b": {"480p": (832, 480, 81), "720p": (1280, 720, 81)},
             "ti2v-5b": {"480p": (832, 480, 121), "720p": (1280, 704, 121)}}, 4, 64)
DRY = Mode(True, "cpu", torch.float32,  # the smallest sizes: the dry run checks code, not figures
           {"t2v-a14b": {"480p": (64, 64, 5), "720p": (64, 64, 5)},
            "ti2v-5b": {"480p": (64, 64, 5), "720p": (64, 64, 5)}}, 3, 4)


class Bench:
    """Rows, the time budget, and the helpers every section uses."""

    def __init__(self, mode: Mode, budget_s: float, work: Path) -> None:
        self.mode, self.budget_s, self.work = mode, budget_s, work
        self.started = time.monotonic()
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.measured: dict[str, float] = {}  # pieces reused by the extrapolations

    def left(self) -> float:
        """Seconds of budget left."""
        return self.budget_s - (time.monotonic() - self.started)

    def add(self, row: Row) -> None:
        """Record a row and print it at once (a killed run still shows what it measured)."""
        self.rows.append(row)
        print(json.dumps(asdict(row)), flush=True)

    def sync(self) -> None:
        """Wait for the GPU, so wall times cover the work."""
        if self.mode.device.startswith("cuda"):
            torch.cuda.synchronize()

    @contextmanager
    def peak(self) -> Iterator[dict[str, float | None]]:
        """Peak allocated GPU bytes inside the block (None on the CPU)."""
        out: dict[str, float | None] = {"bytes": None}
        cuda = self.mode.device.startswith("cuda")
        if cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()
        yield out
        if cuda:
            self.sync()
            out["bytes"] = float(torch.cuda.max_memory_allocated())

    def free(self) -> None:
        """Return every cached GPU block before the next build (nothing to do on the CPU)."""
        if self.mode.device.startswith("cuda"):
            gc.collect()
            torch.cuda.empty_cache()


# --- random pipelines -------------------------------------------------------------------------


@contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Build modules directly in `dtype` (no float32 copy of 14 B parameters first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    """A word-list T5 tokenizer (tests/tiny_models.py): its few ids fit any UMT5 vocabulary."""
    from tiny_models import make_tokenizer

    return make_tokenizer()


def random_pipeline(variant: str, mode: Mode, seed: int = 0) -> Any:
    """A pipeline of the variant with random weights, built on the mode's device."""
    from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline,
                           WanPipeline, WanTransformer3DModel)
    from transformers import UMT5Config, UMT5EncoderModel

    from pipelines.memory import config_kwargs

    spec, shapes = get_variant(variant), mode.shapes(variant)
    torch.manual_seed(seed)
    with torch.device(mode.device), default_dtype(mode.dtype):
        experts = [WanTransformer3DModel(in_channels=shapes.in_channels, out_channels=shapes.out_channels,
                                         **config_kwargs(shapes.transformer)).eval()
                   for _ in range(shapes.experts)]
        encoder = UMT5EncoderModel(UMT5Config(**config_kwargs(shapes.text_encoder))).eval()
    for expert in experts:  # as from_pretrained: these modules stay float32
        keep = tuple(expert._keep_in_fp32_modules or ())
        for name, param in expert.named_parameters():
            if any(k in name for k in keep):
                param.data = param.data.float()
    with torch.device(mode.device):  # normalisation statistics of the right length (the configs'
        # defaults are Wan2.1's 16 channels); random weights make their values irrelevant
        vae = AutoencoderKLWan(**config_kwargs(shapes.vae), latents_mean=[0.0] * shapes.z_dim,
                               latents_std=[1.0] * shapes.z_dim).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=spec.flow_shift, num_train_timesteps=1000)
    cls = WanImageToVideoPipeline if spec.pipeline_class == "WanImageToVideoPipeline" else WanPipeline
    pipe = cls(tokenizer=tokenizer(), text_encoder=encoder, vae=vae, scheduler=scheduler,
               transformer=experts[0], transformer_2=experts[1] if len(experts) > 1 else None,
               boundary_ratio=spec.boundary_ratio, expand_timesteps=spec.expand_timesteps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_random_lora(path: Path, pipe: Any, expert: str, rank: int, seed: int) -> Path:
    """A rank-`rank` LoRA in diffusers keys on every attention and feed-forward layer of an expert."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in getattr(pipe, expert).named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and (
                ".attn" in name or ".ffn." in name):
            tensors[f"transformer.{name}.lora_A.weight"] = (
                torch.randn(rank, module.in_features, generator=generator) * 0.01).to(torch.bfloat16)
            tensors[f"transformer.{name}.lora_B.weight"] = (
                torch.randn(module.out_features, rank, generator=generator) * 0.01).to(torch.bfloat16)
    save_file(tensors, str(path))
    return path


def preset_folder(bench: Bench, pipe: Any, preset_id: str) -> Path:
    """A folder holding random LoRA files under the names the preset expects."""
    preset = get_preset(preset_id)
    folder = bench.work / preset_id
    folder.mkdir(parents=True, exist_ok=True)
    for index, (file, high, _low) in enumerate(preset.files()):
        expert = "transformer" if high else "transformer_2"
        write_random_lora(folder / Path(file).name, pipe, expert, bench.mode.lora_rank, seed=index)
    return folder


def request_for(variant: str, size: tuple[int, int, int], steps: int, guidance: float | None = None,
                previews: bool = False, **raw: Any) -> Any:
    """A validated request at a size (the variant's official guidance unless given)."""
    width, height, frames = size
    spec = get_variant(variant)
    values = dict(variant=variant, prompt="a red ball rolls across a meadow", width=width,
                  height=height, frames=frames, steps=steps, seed=1,
                  preview=PreviewSettings(enabled=previews))
    if guidance is not None:
        values["guidance"] = guidance
        if spec.experts == 2:
            values["guidance_low"] = guidance
    values.update(raw)
    return build_request(values).request


def size_name(size: tuple[int, int, int]) -> str:
    """1280x720x81 style."""
    return "x".join(map(str, size))


def timed_take(bench: Bench, engine: Engine, request: Any) -> tuple[float, list[float], Any]:
    """(wall seconds, step timestamps, result) of one engine take."""
    stamps: list[float] = []

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            stamps.append(time.perf_counter())  # the engine read float(t): the step is done

    bench.sync()
    started = time.perf_counter()
    result = engine.generate(request, on_event)
    bench.sync()
    return time.perf_counter() - started, stamps, result


def bare_steps(bench: Bench, pipe: Any, request: Any) -> list[float]:
    """Step timestamps of bare diffusers on the same pipeline and request (latents out)."""
    stamps: list[float] = []

    def on_step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        float(t)  # the same synchronisation the engine's callback makes
        stamps.append(time.perf_counter())
        return {}

    kwargs: dict[str, Any] = dict(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                  height=request.height, width=request.width,
                                  num_frames=request.frames, num_inference_steps=request.steps,
                                  guidance_scale=request.guidance, output_type="latent",
                                  generator=torch.Generator().manual_seed(request.seed),
                                  callback_on_step_end=on_step_end, max_sequence_length=512)
    if request.guidance_low is not None and getattr(pipe, "transformer_2", None) is not None:
        kwargs["guidance_scale_2"] = request.guidance_low
    from pipelines.engine import _with_shift

    pipe.scheduler = _with_shift(pipe.scheduler, request.flow_shift)
    pipe(**kwargs)
    bench.sync()
    return stamps


def per_step(stamps: list[float]) -> float:
    """Mean seconds per step after the first (which carries the set-up)."""
    return (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)


# --- sections ---------------------------------------------------------------------------------


def engine_vs_bare(bench: Bench, engine: Engine, pipe: Any, variant: str, size: tuple[int, int, int],
                   request: Any) -> None:
    """Per-step time, engine (previews on) against bare diffusers, alternating twice."""
    bare, ours = [], []
    for _ in range(1):  # one alternation: bare diffusers, then the engine
        bare.append(per_step(bare_steps(bench, pipe, request)))
        ours.append(per_step(timed_take(bench, engine, request)[1]))
    b, e = min(bare), min(ours)
    bench.add(Row("overhead", variant, "per-step time, engine / bare diffusers", size_name(size), e, "s",
                  b, e / b, e / b <= TARGET_RATIO, f"{request.steps} steps, guidance {request.guidance:g}"))


def end_to_end(bench: Bench, engine: Engine, pipe: Any, variant: str, size: tuple[int, int, int],
               preset_id: str, profile: str) -> list[float]:
    """Two 4-step preset takes: the first loads the LoRAs; the second is the steady state."""
    engine.manager.preset_source = str(preset_folder(bench, pipe, preset_id))
    request = request_for(variant, size, 4, preset=preset_id)
    target = None if bench.mode.dry else TARGETS_S.get(variant)
    stamps: list[float] = []
    for label in ("first take (loads the LoRA files)", "next take"):
        with bench.peak() as peak:
            wall, stamps, result = timed_take(bench, engine, request)
        assert len(result.loras) == len(get_preset(preset_id).files())
        ok = None if target is None or label.startswith("first") else wall <= target
        bench.add(Row("targets", variant, f"4-step guidance-1 take with {preset_id}, {label}",
                      size_name(size), wall, "s", target, None if target is None else wall / target, ok,
                      f"profile {result.profile}, incl. text encoding and decode"))
    bench.measured[f"{variant}:e2e"] = wall
    memory_row(bench, variant, profile, size, peak["bytes"],
               "the 4-step preset take above (its rank-64 LoRA weights are not in the estimate)")
    return stamps


def memory_row(bench: Bench, variant: str, profile_name: str, size: tuple[int, int, int],
               measured: float | None, note: str) -> None:
    """Peak GPU memory of a take against its profile's estimate."""
    profile = PROFILES[profile_name]
    expected = estimate(profile, variant, *size, shapes=bench.mode.shapes(variant)).vram_bytes
    ratio = None if measured is None or not expected else measured / expected
    bench.add(Row("memory", variant, f"peak GPU memory, {profile_name}", size_name(size),
                  None if measured is None else measured / GIB, "GiB", expected / GIB, ratio,
                  None if ratio is None else abs(ratio - 1) <= TARGET_MEMORY, note))


def handoff(bench: Bench, variant: str, size: tuple[int, int, int], stamps: list[float]) -> None:
    """The high -> low expert switch: the boundary step minus the mean of its neighbours."""
    if len(stamps) < 4:
        return
    d = [b - a for a, b in zip(stamps, stamps[1:])]  # d[0]: step 2 (high), d[1]: the switch, d[2]: low
    switch = d[1] - (d[0] + d[2]) / 2
    bench.add(Row("handoff", variant, "expert handoff (model offload: one expert out, one in)",
                  size_name(size), switch, "s", None, None, None, "2+2 steps at guidance 1"))


def cfg_step(bench: Bench, pipe: Any, variant: str, size: tuple[int, int, int]) -> float:
    """Seconds per step with the official guidance (two transformer passes) at a size."""
    spec = get_variant(variant)
    request = request_for(variant, size, 2, flow_shift=spec.flow_shift)
    seconds = per_step(bare_steps(bench, pipe, request))
    bench.add(Row("official", variant, "step with the official guidance (measured)", size_name(size),
                  seconds, "s", None, None, None, "bare diffusers: the second of 2 steps"))
    return seconds


def decode_times(bench: Bench, pipe: Any, variant: str) -> None:
    """VAE decode of random latents, untiled and tiled, at each size: time and peak vs estimate."""
    shapes = bench.mode.shapes(variant)
    vae_weights = weight_bytes(shapes).vae
    for name, size in bench.mode.sizes[variant].items():
        width, height, frames = size
        latents = torch.randn(1, shapes.z_dim, (frames - 1) // 4 + 1, height // shapes.spatial_stride,
                              width // shapes.spatial_stride, device=bench.mode.device)
        for tiled in (False, True):
            if bench.left() < 30 and not bench.mode.dry:
                bench.skipped.append(f"decode {variant} {name} {'tiled' if tiled else 'untiled'}")
                continue
            if tiled:
                pipe.vae.enable_tiling()
            else:
                pipe.vae.disable_tiling()
            with bench.peak() as peak:
                bench.sync()
                started = time.perf_counter()
                decode_latents(pipe, latents, size_name(size))
                bench.sync()
                seconds = time.perf_counter() - started
            tiles = (256, 192) if tiled else (None, None)
            expected = vae_decode_peak(shapes, width, height, frames, *tiles) + vae_weights
            bench.add(Row("decode", variant, f"VAE decode {'tiled' if tiled else 'untiled'}",
                          size_name(size), seconds, "s", None, None, None,
                          _peak_note(peak["bytes"], expected)))
            bench.measured[f"{variant}:decode:{name}"] = seconds
            bench.free()
        pipe.vae.disable_tiling()


def _peak_note(measured: float | None, expected: float) -> str:
    if measured is None:
        return f"peak estimate {expected / GIB:.2f} GiB (not measured on the CPU)"
    return f"peak {measured / GIB:.2f} GiB, estimate {expected / GIB:.2f} GiB ({measured / expected:.2f}x)"


def memory_per_profile(bench: Bench, variant: str, profiles: list[str], size_key: str) -> None:
    """Peak GPU memory of a 2-step take per profile, against the estimate; a fresh build each."""
    size = bench.mode.sizes[variant][size_key]
    for name in profiles:
        if bench.left() < (60 if variant == "t2v-a14b" else 30) and not bench.mode.dry:
            bench.skipped.append(f"memory {variant} {name}")
            continue
        profile = PROFILES[name]
        if bench.mode.dry:  # the profile's code path with the CPU as its device
            profile = replace(profile, device="cpu", dtype_name="float32")
        manager = ModelManager({}, bench.work / "cache", device=bench.mode.device, demo_dir=None)
        pipe = random_pipeline(variant, bench.mode)
        manager.adopt(variant, pipe, profile, device=bench.mode.device, source="random")
        request = request_for(variant, size, 2, guidance=1.0)
        try:
            with bench.peak() as peak:
                Engine(manager).generate(request)
        except Exception as exc:  # noqa: BLE001 - a profile that fails is a finding, not a crash
            bench.add(Row("memory", variant, f"peak GPU memory, {name}", size_name(size), None, "GiB",
                          note=f"failed: {type(exc).__name__}: {str(exc)[:200]}"))
        else:
            memory_row(bench, variant, name, size, peak["bytes"], "2 steps, guidance 1, previews off")
        manager.unload()
        del pipe, manager
        bench.free()


def official_estimates(bench: Bench, variant: str, step_s: dict[str, float]) -> None:
    """The official 40/50-step runs: measured step x steps + text encoding + decode."""
    spec = get_variant(variant)
    for name, seconds in step_s.items():
        decode = bench.measured.get(f"{variant}:decode:{name}")
        total = seconds * spec.steps + (decode or 0.0)
        bench.add(Row("official", variant, f"official {spec.steps}-step run (extrapolated)",
                      size_name(bench.mode.sizes[variant][name]), total, "s", None, None, None,
                      f"{spec.steps} x {seconds:.2f} s + decode {'%.1f s' % decode if decode else 'n/a'}"))


def ti2v_section(bench: Bench) -> None:
    """TI2V-5B: resident on one GPU; the 4-step target, overhead, official steps, decode."""
    variant = "ti2v-5b"
    sizes = bench.mode.sizes[variant]
    profile = "cpu" if bench.mode.dry else "resident"
    manager = ModelManager({}, bench.work / "cache", device=bench.mode.device, demo_dir=None)
    pipe = random_pipeline(variant, bench.mode)
    manager.adopt(variant, pipe, profile, device=bench.mode.device, source="random")
    engine = Engine(manager)
    end_to_end(bench, engine, pipe, variant, sizes["720p"], "ti2v-distill-4step", "resident")
    engine.manager.loaded(variant).loras.clear(pipe)
    engine_vs_bare(bench, engine, pipe, variant, sizes["480p"],
                   request_for(variant, sizes["480p"], bench.mode.ratio_steps, previews=True))
    steps = {}
    for name in ("480p", "720p"):
        if bench.left() > 60 or bench.mode.dry:
            steps[name] = cfg_step(bench, pipe, variant, sizes[name])
    decode_times(bench, pipe, variant)
    official_estimates(bench, variant, steps)
    manager.unload()
    del pipe, engine, manager
    bench.free()


def a14b_section(bench: Bench) -> None:
    """T2V-A14B under model offload: the 2+2 target with the handoff, overhead, official steps."""
    variant = "t2v-a14b"
    sizes = bench.mode.sizes[variant]
    profile = "cpu" if bench.mode.dry else "80gb"
    manager = ModelManager({}, bench.work / "cache", device=bench.mode.device, demo_dir=None)
    pipe = random_pipeline(variant, bench.mode)
    manager.adopt(variant, pipe, profile, device=bench.mode.device, source="random")
    engine = Engine(manager)
    stamps = end_to_end(bench, engine, pipe, variant, sizes["480p"], "t2v-lightning-4step", "80gb")
    handoff(bench, variant, sizes["480p"], stamps)
    engine.manager.loaded(variant).loras.clear(pipe)
    # shift 12 with 3 steps keeps every step on the high-noise expert: no handoff in the ratio
    engine_vs_bare(bench, engine, pipe, variant, sizes["480p"],
                   request_for(variant, sizes["480p"], 3, guidance=1.0, previews=True, flow_shift=12.0))
    steps = {}
    for name in ("480p", "720p"):
        if bench.left() > 90 or bench.mode.dry:
            steps[name] = cfg_step(bench, engine.manager.loaded(variant).pipeline_for(False), variant,
                                   sizes[name])
    decode_times(bench, pipe, variant)
    official_estimates(bench, variant, steps)
    manager.unload()
    del pipe, engine, manager
    bench.free()


SECTIONS: dict[str, Callable[[Bench], None]] = {
    "ti2v": ti2v_section,
    "a14b": a14b_section,
    # resident (TI2V) and 80gb (A14B) are measured on the preset takes above
    "memory-ti2v": lambda b: memory_per_profile(b, "ti2v-5b", ["80gb", "48gb", "fp8", "24gb"], "720p"),
    "memory-a14b": lambda b: memory_per_profile(b, "t2v-a14b", ["fp8", "24gb"], "480p"),
}
MIN_SECONDS = {"ti2v": 100, "a14b": 120, "memory-ti2v": 40, "memory-a14b": 80}


# --- reporting --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform()}
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    return info


def markdown(rows: list[Row], skipped: list[str], info: dict[str, Any], dry: bool) -> str:
    """The rows as a markdown table, with the machine and what was skipped."""
    lines = [f"bench_gpu.py {'--dry-run (CPU, tiny shapes: no figure means anything)' if dry else ''}".strip(),
             "", "machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             "| section | variant | measure | size | value | reference | ratio | ok | note |",
             "|---|---|---|---|---|---|---|---|---|"]

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.3g}"

    for r in rows:
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append(f"| {r.section} | {r.variant} | {r.measure} | {r.size} | {num(r.value)} {r.unit} | "
                     f"{num(r.reference)} | {num(r.ratio)} | {ok} | {r.note} |")
    if skipped:
        lines += ["", "skipped (time budget): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def estimate_table() -> str:
    """Markdown of every profile's estimate for every variant at its official size (CPU only)."""
    lines = ["| variant | profile | GPU peak GiB | host RAM GiB | encode / denoise / decode GiB |",
             "|---|---|---|---|---|"]
    for variant in ("t2v-a14b", "i2v-a14b", "ti2v-5b"):
        for name, profile in PROFILES.items():
            e = estimate(profile, variant)
            stages = " / ".join(f"{b / GIB:.1f}" for _, b in e.stages)
            lines.append(f"| {variant} | {name} | {e.vram_bytes / GIB:.1f} | {e.ram_bytes / GIB:.1f} | {stages} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sections that fit the budget; write JSON and markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, same code paths")
    parser.add_argument("--estimates", action="store_true", help="print the estimate table and stop")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "out" / "gpu")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    if args.estimates:
        print(estimate_table())
        return 0
    mode = DRY if args.dry_run else REAL
    if not mode.dry and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    if mode.dry:
        torch.set_num_threads(1)  # tiny ops: two threads only wait on each other on a busy box
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        bench = Bench(mode, args.budget_s, Path(tmp))
        for name in args.sections.split(","):
            if not mode.dry and bench.left() < MIN_SECONDS[name]:
                bench.skipped.append(f"section {name}")
                continue
            print(f"# {name} ({bench.left():.0f} s left)", flush=True)
            SECTIONS[name](bench)
        info = machine()
        payload = {"dry_run": mode.dry, "machine": info, "rows": [asdict(r) for r in bench.rows],
                   "skipped": bench.skipped, "seconds": round(time.monotonic() - bench.started, 1)}
        (args.out_dir / "bench_gpu.json").write_text(json.dumps(payload, indent=1))
        (args.out_dir / "bench_gpu.md").write_text(markdown(bench.rows, bench.skipped, info, mode.dry))
    print(f"wrote {args.out_dir / 'bench_gpu.json'} and bench_gpu.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
