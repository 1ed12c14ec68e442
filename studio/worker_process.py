"""`python app.py worker`: one process running queued takes on one device for a studio whose
database is PostgreSQL. Start one per GPU (`--device cuda:N`), on this machine or others that
share the data folder; the web process can run with no worker of its own (`serve --no-worker`).

`torchrun --nproc-per-node N app.py worker --parallel N ...` instead runs each take across N GPUs
(`run_parallel_worker`, `studio.parallel_worker`): one process per GPU, rank 0 the worker.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Mapping, Sequence

import storage
from pipelines.engine import Engine
from pipelines.manager import ModelManager
from pipelines.stream import event_stream
from pipelines.variants import VARIANTS

from . import hosting
from .shared_bus import shared_bus
from .worker import Worker

log = logging.getLogger(__name__)


def check_shared(database_url: str | None) -> str:
    """The database URL a separate worker needs (PostgreSQL), or ValueError with a sentence."""
    if not database_url or database_url.startswith("sqlite"):
        raise ValueError("A separate worker needs the studio's PostgreSQL database: pass "
                         "--database-url postgresql+psycopg://... (with SQLite the studio runs "
                         "its takes itself).")
    return database_url


def build_worker(data_dir: Path, weights: Mapping[str, str], database_url: str | None,
                 device: str | None = None, variants: Sequence[str] | None = None,
                 **options: float) -> Worker:
    """A worker on the studio's PostgreSQL for the variants it has weights for (or those asked)."""
    check_shared(database_url)
    manager = ModelManager(weights, cache_dir=Path(data_dir) / "cache", device=device)
    available = manager.available()
    chosen = list(variants) if variants else available
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown variant {unknown[0]!r}; use {', '.join(VARIANTS)}.")
    missing = [v for v in chosen if v not in available]
    if missing or not chosen:
        raise ValueError(f"This worker has no weights for {', '.join(missing) or 'any variant'}: "
                         "pass --weights VARIANT=FOLDER_OR_HUB_ID.")
    store = storage.Store(storage.Database.open(data_dir, url=database_url))
    return Worker(store, hosting.gpu_task(event_stream(Engine(manager))),
                  shared_bus(store, listen=False), variants=chosen, is_demo=manager.is_demo,
                  **options)


def run_worker(data_dir: Path, weights: Mapping[str, str], database_url: str | None,
               device: str | None = None, variants: Sequence[str] | None = None,
               parallel: int | None = None) -> int:
    """Run until SIGINT or SIGTERM (the take in hand is cancelled and kept as cancelled);
    `parallel` N: this process is one rank of a torchrun group running takes across N GPUs."""
    if parallel is not None:
        return run_parallel_worker(data_dir, weights, database_url, parallel, device, variants)
    worker = build_worker(data_dir, weights, database_url, device, variants)
    _stop_on_signals(worker)
    print(f"worker {worker.name}: running {', '.join(worker.variants or [])} on "
          f"{device or 'the default device'}", file=sys.stderr, flush=True)
    try:
        worker.run_forever()
    finally:
        worker.store.db.close()
    return 0


def _stop_on_signals(worker: Worker) -> None:
    """SIGTERM and SIGINT stop the worker after cancelling the take in hand."""
    def stop(signum: int, _frame: object) -> None:
        log.warning("worker %s: stopping (signal %s)", worker.name, signum)
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run_parallel_worker(data_dir: Path, weights: Mapping[str, str], database_url: str | None,
                        degree: int, device: str | None = None,
                        variants: Sequence[str] | None = None) -> int:
    """One rank of `torchrun --nproc-per-node N app.py worker --parallel N`: rank 0 claims and
    records takes, every rank runs them; until SIGINT or SIGTERM reaches rank 0 (the take in
    hand is cancelled on every rank at the same step and kept as cancelled)."""
    from pipelines.parallel import QUIT, start_group

    from .parallel_worker import (ParallelWorker, choose_variant, load_on_rank, parallel_engine,
                                  serve_follower)

    check_shared(database_url)
    group = start_group(degree, device)
    store: storage.Store | None = None
    try:
        manager = ModelManager(weights, cache_dir=Path(data_dir) / "cache", device=group.device)
        variant = choose_variant(manager, variants)  # the same answer on every rank
        problem = None
        if group.lead:  # the database first: no rank loads weights for a worker that cannot claim
            try:
                store = storage.Store(storage.Database.open(data_dir, url=database_url))
            except storage.StorageError as exc:
                problem = str(exc)
        problem = group.agree(problem)
        if problem:
            raise storage.StorageError(problem)
        load_on_rank(group, manager, variant)
        engine = parallel_engine(group, manager)
        if not group.lead:
            # Rank 0 leads the way out (cancelling its take in step); a signal here waits for it.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: log.warning(
                    "rank %s: signal %s; stopping when rank 0 does", group.rank, signum))
            serve_follower(group, engine)
            return 0
        assert store is not None
        try:
            worker = ParallelWorker(store, engine, shared_bus(store, listen=False), group, variant)
            _stop_on_signals(worker)
            print(f"worker {worker.name}: running {variant} across {degree} GPUs "
                  f"({group.device.split(':')[0]}, context parallel)", file=sys.stderr, flush=True)
            worker.run_forever()
        finally:
            if group.broken is None:  # whatever ended rank 0, the others must not wait for it
                group.share(QUIT)
        return 0 if group.broken is None else 1
    finally:
        if store is not None:
            store.db.close()
        group.close()
