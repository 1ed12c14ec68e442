"""Many GPUs for one take: diffusers' context parallelism under torchrun, with the ranks in step.

    torchrun --nproc-per-node 4 app.py worker --parallel 4 --database-url postgresql+psycopg://...

torchrun starts one process (rank) per GPU. Each rank loads the whole pipeline onto its own GPU
(`cuda:LOCAL_RANK`: weights are replicated, not sharded) and turns on diffusers' context
parallelism on each expert (`enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))`):
the Wan transformer's `_cp_plan` splits the video's tokens across the ranks at the first block
and gathers them after `proj_out`, and each attention exchanges heads for tokens with an
all-to-all (Ulysses), so every rank computes 1/N of every step and ends each step with the same
latents. Everything else (text encoder, scheduler, VAE decode, previews) runs whole on every rank.

For that to work every rank must make the same pipeline call with the same inputs, step for
step: a rank that stops one step early leaves the others waiting in a collective forever. Here:

- only rank 0 talks to the studio (claims, leases, progress, events, the MP4); it shares each
  take's request with the other ranks (`RankGroup.share`, a broadcast on a small gloo group of
  its own) and all ranks run the same engine call. The engine's seeded CPU generator gives every
  rank the same noise;
- before a take starts, every rank checks what could fail on its own (LoRA files, the start
  image) and all agree to run it or not (`RankGroup.agree`);
- at every step rank 0 shares one word, go on or stop (a cancel asked for anywhere, the worker
  stopping, a lost lease), and each rank's engine sees a stop at the same step;
- an idle rank 0 says so once a poll, so the other ranks never wait on a collective longer than
  the group's timeout.

This module knows torch and diffusers only; the worker that drives rank 0 is
`studio.parallel_worker`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import StudioError
from .events import CancelledEvent, DoneEvent, Event, FailedEvent, StepEvent
from .request import GenerationRequest
from .stream import FINAL_EVENTS, EventStream

log = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
GROUP_TIMEOUT_S = 1800.0  # the longest any collective may wait (a step, a decode, an idle poll)
EXPERTS = ("transformer", "transformer_2")

# What rank 0 shares: ("idle",) | ("take", request) | ("step", index, stop) | ("quit",)
IDLE, QUIT = ("idle",), ("quit",)


class ParallelError(StudioError):
    """The GPUs of a context-parallel worker cannot start, or lost each other."""


def torchrun_command(degree: int) -> str:
    """The command line this mode is meant to be started with."""
    return (f"torchrun --nproc-per-node {degree} app.py worker --parallel {degree} "
            "--database-url postgresql+psycopg://...")


@dataclass
class RankGroup:
    """This process's place in the torchrun group and the channels the ranks share."""

    rank: int
    world_size: int
    local_rank: int
    device: str  # "cuda:LOCAL_RANK", or "cpu" (gloo: for checks only)
    mesh: Any  # torch DeviceMesh ("ring", "ulysses") that diffusers' context parallelism uses
    control: Any  # a gloo process group for the small messages of `share` and `agree`
    broken: BaseException | None = None

    @property
    def lead(self) -> bool:
        """Whether this is rank 0, the one that talks to the studio."""
        return self.rank == 0

    def share(self, message: Any = None) -> Any:
        """Rank 0's `message`, on every rank (the others pass nothing and receive it)."""
        import torch.distributed as dist

        box = [message if self.lead else None]
        try:
            dist.broadcast_object_list(box, src=0, group=self.control)
        except Exception as exc:  # noqa: BLE001 - a peer died or timed out: the group is over
            raise self._lost(exc) from exc
        return box[0]

    def agree(self, problem: str | None) -> str | None:
        """Every rank's problem (None: ready), gathered; the first one found, on every rank."""
        import torch.distributed as dist

        problems: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(problems, (self.rank, problem), group=self.control)
        except Exception as exc:  # noqa: BLE001
            raise self._lost(exc) from exc
        for rank, found in problems:
            if found:
                return found if rank == 0 else f"On GPU rank {rank}: {found}"
        return None

    def close(self) -> None:
        """Leave the group (every rank calls this once, at the end)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def _lost(self, exc: BaseException) -> ParallelError:
        self.broken = exc
        log.error("rank %s: the group's collective failed: %s", self.rank, exc)
        return ParallelError(f"The {self.world_size} GPU processes of this worker lost each other "
                             f"({type(exc).__name__}); restart it with torchrun.")


def start_group(degree: int, device: str | None = None,
                timeout_s: float = GROUP_TIMEOUT_S) -> RankGroup:
    """Join the torchrun group (one rank per GPU) and build the mesh; ParallelError if this
    process was not started the way the mode needs. `device` None: `cuda:LOCAL_RANK` over NCCL;
    "cpu": gloo, for checks without GPUs."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if degree < 2:
        raise ParallelError("--parallel needs at least 2 GPUs; for one GPU run `app.py worker` "
                            "without it.")
    missing = [name for name in TORCHRUN_ENV if not os.environ.get(name)]
    if missing:
        raise ParallelError(f"--parallel {degree} runs one process per GPU under torchrun, and "
                            f"this process has no {missing[0]}: start it as "
                            f"`{torchrun_command(degree)}`.")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if world != degree:
        raise ParallelError(f"--parallel {degree} but torchrun started {world} processes: pass "
                            f"--nproc-per-node {degree} (one process per GPU).")
    if device is None or device.startswith("cuda"):
        if device not in (None, "cuda"):
            raise ParallelError(f"With --parallel each process uses the GPU torchrun gives it "
                                f"(cuda:LOCAL_RANK); leave out --device {device}.")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if count < local_world:
            raise ParallelError(f"--parallel {degree} needs one CUDA GPU per process and this "
                                f"machine has {count}; to try the mode without GPUs pass --device "
                                "cpu (gloo, slow: for checks only).")
        torch.cuda.set_device(local_rank)
        device, device_type, backend = f"cuda:{local_rank}", "cuda", "nccl"
    elif device == "cpu":
        device_type, backend = "cpu", "gloo"
    else:
        raise ParallelError(f"--parallel runs on CUDA GPUs (or --device cpu for checks), not "
                            f"{device}.")
    timeout = timedelta(seconds=timeout_s)
    bound = {"device_id": torch.device(device)} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **bound)
    try:
        # One mesh for both experts: ring 1 (unused), Ulysses across every rank.
        mesh = init_device_mesh(device_type, (1, world), mesh_dim_names=("ring", "ulysses"))
        # Control messages get their own gloo group: pickled objects stay on the CPU (no CUDA
        # copies per word) and never interleave with the experts' collectives.
        control = dist.new_group(backend="gloo", timeout=timeout)
    except BaseException:
        dist.destroy_process_group()
        raise
    return RankGroup(rank, world, local_rank, device, mesh, control)


def enable_context_parallel(pipe: Any, group: RankGroup) -> list[str]:
    """Turn on Ulysses context parallelism across the group on each expert of `pipe` (which
    must be on this rank's device); the names of the experts it was turned on for."""
    from diffusers import ContextParallelConfig

    enabled = []
    for name in EXPERTS:
        model = getattr(pipe, name, None)
        if model is None:
            continue
        heads = int(model.config.num_attention_heads)
        if heads % group.world_size:
            raise ParallelError(f"The {name} has {heads} attention heads, which do not split "
                                f"evenly across {group.world_size} GPUs; use a number of GPUs "
                                f"that divides {heads}.")
        config = ContextParallelConfig(ulysses_degree=group.world_size, mesh=group.mesh)
        if group.device == "cpu":
            _enable_on_cpu(model, config, group)
        else:
            model.enable_parallelism(config=config)
        enabled.append(name)
    if not enabled:
        raise ParallelError("This pipeline has no Wan transformer to run across GPUs.")
    return enabled


def _enable_on_cpu(model: Any, config: Any, group: RankGroup) -> None:
    """`enable_parallelism` on a machine without an accelerator.

    diffusers 0.42 derives each rank's device as `rank % torch.accelerator.device_count()`,
    which divides by zero when there is no accelerator; this resolves the config exactly as
    `ModelMixin._resolve_parallel_config` does, with the CPU as the device, and leaves the rest
    (attention checks, processors, the `_cp_plan` hooks) to diffusers.
    """
    import torch
    from diffusers.models._modeling_parallel import ParallelConfig

    def resolve(cp_config: Any) -> Any:
        parallel = ParallelConfig(context_parallel_config=cp_config)
        parallel.setup(group.rank, group.world_size, torch.device("cpu"), mesh=cp_config.mesh)
        model._parallel_config = parallel
        return parallel

    model._resolve_parallel_config = resolve  # this instance only, for this one call
    try:
        model.enable_parallelism(config=config)
    finally:
        del model._resolve_parallel_config


class RankEngine:
    """An engine whose every run starts by making this rank's GPU the current device.

    CUDA's current device belongs to each thread, and the event stream runs the engine in a
    thread of its own, where it would otherwise be cuda:0 for every rank.
    """

    def __init__(self, engine: Any, device: str) -> None:
        self.engine = engine
        self.device = device
        self.manager = engine.manager

    def generate(self, request: GenerationRequest, on_event: Any = None,
                 cancel: threading.Event | None = None) -> Any:
        """Run one request on this rank's device (see `pipelines.engine.Engine.generate`)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(self.device)
        return self.engine.generate(request, on_event, cancel)


def context_parallel_backends() -> set[str]:
    """diffusers attention backends that can run context parallel."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return set(_AttentionBackendRegistry._supports_context_parallel)


def take_problem(request: GenerationRequest, pipe: Any, degree: int) -> str | None:
    """Why a take cannot run across `degree` GPUs (a sentence), or None when it can."""
    speed = request.speed
    if speed.cache != "none":
        # Each rank would judge on its own share of the tokens whether to skip a step; ranks
        # that disagree leave each other waiting in a collective.
        return (f"The {speed.cache} step cache cannot run across several GPUs (each GPU would "
                "decide on its own part of the video whether to skip a step); run this take "
                "without a step cache.")
    if speed.attention not in context_parallel_backends():
        usable = sorted(b for b in context_parallel_backends() if not b.endswith("_hub"))
        return (f"The {speed.attention} attention backend cannot run across several GPUs in "
                f"diffusers; choose one of {', '.join(usable)}.")
    tokens = video_tokens(request, pipe)
    if tokens is not None and tokens % degree:
        return (f"At {request.width}x{request.height} and {request.frames} frames the video is "
                f"{tokens} tokens, which do not split evenly across {degree} GPUs; choose another "
                "size or frame count (the official sizes split evenly across 2, 4 and 8).")
    return None


def video_tokens(request: GenerationRequest, pipe: Any) -> int | None:
    """How many tokens the transformer sees for this request (None if the pipeline won't say)."""
    transformer = getattr(pipe, "transformer", None)
    stride = getattr(pipe, "vae_scale_factor_spatial", None)
    temporal = getattr(pipe, "vae_scale_factor_temporal", None)
    if transformer is None or not stride or not temporal:
        return None
    pt, ph, pw = transformer.config.patch_size
    frames = (request.frames - 1) // temporal + 1
    return (frames // pt) * (request.height // stride // ph) * (request.width // stride // pw)


def engine_preflight(engine: Any) -> Callable[[GenerationRequest], str | None]:
    """What this rank checks before a take: its LoRA files and the start image are there."""

    def check(request: GenerationRequest) -> str | None:
        try:
            engine.manager.resolve_loras(request)
        except StudioError as exc:
            return str(exc)
        if request.image_path and not Path(request.image_path).is_file():
            return ("The start image is not readable from this GPU's process; the data folder "
                    "must be the same path on every rank.")
        return None

    return check


def lead_stream(stream: EventStream, group: RankGroup,
                check: Callable[[GenerationRequest], str | None],
                preflight: Callable[[GenerationRequest], str | None]) -> EventStream:
    """Rank 0's event stream: shares each take and each step's go/stop with the other ranks,
    which run `follow`; otherwise the same events as `stream` (see module docstring)."""

    def events(request: GenerationRequest,
               cancel: threading.Event | None = None) -> Iterator[Event]:
        cancel = cancel or threading.Event()
        problem = check(request)
        if problem:  # nothing shared: the other ranks never hear of this take
            yield FailedEvent(problem)
            return
        group.share(("take", request))
        problem = group.agree(preflight(request))
        if problem:
            yield FailedEvent(problem)
            return
        yield from _in_step(stream, group, request, cancel)

    return events


def _in_step(stream: EventStream, group: RankGroup, request: GenerationRequest,
             cancel: threading.Event) -> Iterator[Event]:
    """Run the engine on rank 0, sharing each step's word; stops only ever in step."""
    own = threading.Event()  # the engine's own cancel: set only when the others hear it too
    inner = stream(request, own)
    final: Event | None = None
    unsaid: int | None = None  # a step whose word the other ranks still wait for
    try:
        for event in inner:
            if isinstance(event, FINAL_EVENTS):
                final = event
            elif isinstance(event, StepEvent):
                unsaid = event.index
            yield event
            if unsaid is not None:
                stop = cancel.is_set()
                group.share(("step", unsaid, stop))
                unsaid = None
                if stop:
                    own.set()
    finally:
        if final is None and group.broken is None:
            # Closed mid-run. The other ranks wait for this step's word, or compute the next
            # step: say stop at this step, or run on to the next one and say it there.
            if unsaid is not None:
                group.share(("step", unsaid, True))
                own.set()
            for event in inner:
                if isinstance(event, StepEvent) and not own.is_set():
                    group.share(("step", event.index, True))
                    own.set()
        inner.close()


def follow(group: RankGroup, stream: EventStream,
           preflight: Callable[[GenerationRequest], str | None],
           on_take: Callable[[GenerationRequest, Event | None], None] | None = None) -> int:
    """The other ranks: run what rank 0 shares until it says quit; how many takes ran.
    `on_take(request, final event)` hears how each take ended here."""
    runs = 0
    while True:
        message = group.share()
        if message[0] == "quit":
            return runs
        if message[0] == "take":
            request = message[1]
            if group.agree(preflight(request)) is None:
                final = follow_take(group, stream, request)
                runs += 1
                if on_take is not None:
                    on_take(request, final)


def follow_take(group: RankGroup, stream: EventStream,
                request: GenerationRequest) -> DoneEvent | FailedEvent | CancelledEvent | None:
    """Run one take as rank 0 runs it, stopping at the step rank 0 says; its final event."""
    own = threading.Event()
    inner = stream(request, own)
    final = None
    try:
        for event in inner:
            if isinstance(event, StepEvent):
                word = group.share()
                if word[0] != "step" or word[1] != event.index:
                    raise ParallelError(f"GPU rank {group.rank} fell out of step with rank 0 (at "
                                        f"step {event.index}, rank 0 said {word[:2]}); restart "
                                        "the worker.")
                if word[2]:
                    own.set()
            elif isinstance(event, FINAL_EVENTS):
                final = event
    finally:
        inner.close()
    if isinstance(final, FailedEvent):
        log.warning("rank %s: the take failed here too: %s", group.rank, final.message)
    return final
