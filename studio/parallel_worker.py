"""A worker that runs each take across several GPUs at once (`app.py worker --parallel N`).

Started as `torchrun --nproc-per-node N app.py worker --parallel N --database-url ...`: N
processes, one per GPU, each with the whole pipeline on its own GPU and diffusers' context
parallelism on its experts (`pipelines.parallel`). Rank 0 is an ordinary `studio.worker.Worker`
(claims, lease, progress, events, the MP4) whose event stream also tells the other ranks what to
run and when to stop; the other ranks only run what they are told (`pipelines.parallel.follow`)
and never open the database.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import storage
from pipelines.engine import Engine
from pipelines.manager import LoadedModel, ModelManager
from pipelines.parallel import (IDLE, QUIT, ParallelError, RankEngine, RankGroup,
                                enable_context_parallel, engine_preflight, follow, lead_stream,
                                take_problem)
from pipelines.stream import event_stream

from .bus import TakeBus
from .worker import Worker

log = logging.getLogger(__name__)


class ParallelWorker(Worker):
    """Rank 0: a Worker whose takes every rank of the group runs in step (module docstring)."""

    def __init__(self, store: storage.Store, engine: Any, bus: TakeBus, group: RankGroup,
                 variant: str, **options: Any) -> None:
        manager = engine.manager

        def problem(request: Any) -> str | None:
            loaded = manager.loaded(variant)
            return None if loaded is None else take_problem(request, loaded.pipe, group.world_size)

        stream = lead_stream(event_stream(engine), group, problem, engine_preflight(engine))
        super().__init__(store, stream, bus, variants=[variant], is_demo=manager.is_demo, **options)
        self.group = group

    def run_once(self) -> bool:
        """Claim and run one take on every rank; when none is queued, tell the others so."""
        if self.group.broken is not None:  # a collective failed: this group cannot run takes
            self.stop(timeout=0)
            return False
        ran = super().run_once()
        if not ran:
            try:
                self.group.share(IDLE)
            except ParallelError as exc:
                log.error("worker %s: %s", self.name, exc)
                self.stop(timeout=0)
        return ran

    def finish(self) -> None:
        """Tell the other ranks to leave (once `run_forever` has returned)."""
        if self.group.broken is None:
            self.group.share(QUIT)


def load_on_rank(group: RankGroup, manager: ModelManager, variant: str) -> LoadedModel:
    """Load the variant on this rank's device and turn context parallelism on; every rank
    succeeds or all raise ParallelError with the first rank's reason."""
    loaded, problem = None, None
    try:
        loaded = manager.preload([variant])[0]
        enable_context_parallel(loaded.pipe, group)
    except Exception as exc:  # noqa: BLE001 - every rank must hear of it, or the others wait
        log.exception("rank %s could not load %s", group.rank, variant)
        problem = str(exc) or type(exc).__name__
    problem = group.agree(problem)
    if problem:
        raise ParallelError(problem)
    assert loaded is not None
    return loaded


def parallel_engine(group: RankGroup, manager: ModelManager) -> RankEngine:
    """The engine each rank runs takes with."""
    return RankEngine(Engine(manager), group.device)


def serve_follower(group: RankGroup, engine: Any,
                   on_take: Callable[[Any, Any], None] | None = None) -> int:
    """A rank other than 0: run what rank 0 shares until it says quit; how many takes ran
    (`on_take(request, final event)` after each)."""
    return follow(group, event_stream(engine), engine_preflight(engine), on_take)


def choose_variant(manager: ModelManager, variants: Sequence[str] | None) -> str:
    """The one variant a parallel worker serves: the one asked for, else the only one it was
    given weights for (bundled demo weights do not count)."""
    chosen = list(variants) if variants else [v for v in manager.available()
                                              if not manager.is_demo(v)]
    if len(chosen) != 1:
        offered = ", ".join(manager.available()) or "none"
        raise ValueError("A worker across several GPUs keeps one variant loaded on every GPU: "
                         f"pass --variants with one of the variants it has weights for ({offered}).")
    if chosen[0] not in manager.available():
        raise ValueError(f"This worker has no weights for {chosen[0]}: pass --weights "
                         f"{chosen[0]}=FOLDER_OR_HUB_ID.")
    return chosen[0]
