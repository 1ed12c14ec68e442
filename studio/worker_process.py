"""`python app.py worker`: one process running queued takes on one device for a studio whose
database is PostgreSQL. Start one per GPU (`--device cuda:N`), on this machine or others that
share the data folder; the web process can run with no worker of its own (`serve --no-worker`).
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


def build_worker(data_dir: Path, weights: Mapping[str, str], database_url: str | None,
                 device: str | None = None, variants: Sequence[str] | None = None,
                 **options: float) -> Worker:
    """A worker on the studio's PostgreSQL for the variants it has weights for (or those asked)."""
    if not database_url or database_url.startswith("sqlite"):
        raise ValueError("A separate worker needs the studio's PostgreSQL database: pass "
                         "--database-url postgresql+psycopg://... (with SQLite the studio runs "
                         "its takes itself).")
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
               device: str | None = None, variants: Sequence[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM (the take in hand is cancelled and kept as cancelled)."""
    worker = build_worker(data_dir, weights, database_url, device, variants)

    def stop(signum: int, _frame: object) -> None:
        log.warning("worker %s: stopping (signal %s)", worker.name, signum)
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"worker {worker.name}: running {', '.join(worker.variants or [])} on "
          f"{device or 'the default device'}", file=sys.stderr, flush=True)
    try:
        worker.run_forever()
    finally:
        worker.store.db.close()
    return 0
