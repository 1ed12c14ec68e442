"""Builds the studio (database, model manager, engine, runner, Blocks) and serves it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gradio as gr
from starlette.middleware import Middleware

import storage
from pipelines.engine import Engine
from pipelines.manager import ModelManager
from pipelines.stream import event_stream

from . import hosting
from .bus import TakeBus
from .handlers import Handlers
from .jobs import Jobs
from .limits import MAX_IMPORT_BYTES, BodyLimit, Limits, MiB
from .maintenance import forget_stored_paths
from .media_links import media_routes
from .owners import load_secrets
from .placeholders import write_placeholders
from .scratch import ScratchSpace
from .share import studio_share_routes
from .share import STATIC_DIR
from .shared_bus import shared_bus
from .ui import build_ui
from .worker import SAVE_WAIT_S, Worker

log = logging.getLogger(__name__)

MAX_UPLOAD = f"{MAX_IMPORT_BYTES // MiB}mb"  # the largest file: a project export to import
QUEUE_SLOTS = 8  # concurrent non-generation events (browsing, listing); generation has its own


@dataclass
class Studio:
    """Everything the running studio holds: the Blocks, storage, the model manager, the queue."""

    demo: gr.Blocks
    store: storage.Store
    manager: ModelManager
    jobs: Jobs
    worker: Worker | None
    handlers: Handlers
    data_dir: Path

    @property
    def db(self) -> storage.Database:
        """The database under the store."""
        return self.store.db

    def close(self) -> None:
        """Stop serving and working, close the database and remove the scratch folder."""
        self.demo.close()
        if self.worker is not None:
            self.worker.stop()
        self.manager.unload()
        self.store.db.close()
        self.handlers.scratch.remove()


def build_studio(data_dir: Path, weights: Mapping[str, str], *,
                 preview_interval_s: float = 0.3, manager: ModelManager | None = None,
                 limits: Limits | None = None, save_wait_s: float = SAVE_WAIT_S,
                 database_url: str | None = None, worker: bool = True,
                 device: str | None = None, prompt_model: str | Path | None = None) -> Studio:
    """Open the data folder and build the studio's services and UI (nothing loads a model yet).

    `database_url`: PostgreSQL shared with `app.py worker` processes (None: SQLite in the data
    folder). `worker=False`: this process runs no takes itself, others do. `prompt_model`: a
    local language model folder for "Improve prompt" (loaded now, on the CPU; None: no button).
    Raises StorageError (the folder is in use, read-only, the database unreachable or damaged)
    or ValueError (a bad setting in the environment) with a sentence, before anything is served.
    """
    data_dir = Path(data_dir)
    limits = limits or Limits.from_env()
    helper = None
    if prompt_model:  # a bad folder stops the start with its sentence, before anything is opened
        from pipelines.prompt_helper import PromptHelper

        helper = PromptHelper.load(prompt_model)
    store = storage.Store(storage.Database.open(data_dir, url=database_url))
    running: Worker | None = None
    try:
        forget_stored_paths(store)
        secrets = load_secrets(data_dir)
        scratch = ScratchSpace(data_dir)
        zero_gpu = hosting.on_zero_gpu()
        # On ZeroGPU the weights go onto `cuda` now, outside any GPU call (ZeroGPU emulates the
        # device until a call runs), so a paid GPU call only denoises and decodes.
        manager = manager or ModelManager(weights, cache_dir=data_dir / "cache", device=device,
                                          profile="zerogpu" if zero_gpu else None)
        if zero_gpu:
            manager.preload(manager.available())
        bus = shared_bus(store) if store.db.shared else TakeBus()
        if worker:
            running = Worker(store, hosting.gpu_task(event_stream(Engine(manager))), bus,
                             variants=manager.available(), is_demo=manager.is_demo,
                             preview_interval_s=preview_interval_s, save_wait_s=save_wait_s)
        jobs = Jobs(store, bus, scratch, limits, running)
        placeholders = write_placeholders(scratch.placeholders)
        handlers = Handlers(store, manager, jobs, placeholders, secrets, scratch, limits,
                            prompt_helper=helper)
        demo = build_ui(handlers)
        if running is not None:
            running.start()
    except BaseException:
        if running is not None:
            running.stop()
        store.db.close()
        raise
    return Studio(demo, store, manager, jobs, running, handlers, data_dir)


def app_routes(studio: Studio) -> list[Any]:
    """Our own routes, matched before Gradio's: share pages and signed media URLs."""
    return [*studio_share_routes(studio.store), *media_routes(studio.store, studio.handlers.signer)]


def launch_kwargs(studio: Studio, host: str, port: int) -> dict[str, Any]:
    """Keyword arguments for demo.launch(): theme, our CSS, our routes, no file access by path.

    Neither the data folder (studio.db) nor the media folder is in `allowed_paths`: the UI hands
    Gradio view copies (studio.views) and the API hands out signed URLs (studio.media_links).
    The data folder is also in `blocked_paths`, so a raw media path returned by mistake fails.
    """
    data = studio.data_dir.resolve()
    views = studio.handlers.views.folder.resolve()
    if views.is_relative_to(data):
        raise ValueError(f"The data folder {data} must not hold the temp folder {views}; "
                         "pick a data folder outside the system temp folder.")
    return {
        # show_error off: only gr.Error sentences reach a visitor, never an exception's text
        "server_name": host, "server_port": port, "share": False, "show_error": False,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate",
                                font=[gr.themes.Font("system-ui"), "sans-serif"],
                                font_mono=[gr.themes.Font("ui-monospace"), "monospace"]),
        "css_paths": [STATIC_DIR / "studio.css"],
        "app_kwargs": {"routes": app_routes(studio), "middleware": [Middleware(BodyLimit)]},
        "allowed_paths": [],
        "blocked_paths": [str(data)],
        "max_file_size": MAX_UPLOAD,
        "footer_links": ["api"],
    }


def serve(data_dir: Path, weights: Mapping[str, str], host: str = "127.0.0.1",
          port: int = 7860, database_url: str | None = None, worker: bool = True,
          device: str | None = None, prompt_model: str | None = None) -> None:
    """Build the studio and serve it until interrupted."""
    studio = build_studio(data_dir, weights, database_url=database_url, worker=worker,
                          device=device, prompt_model=prompt_model)
    studio.demo.queue(default_concurrency_limit=QUEUE_SLOTS)
    try:
        studio.demo.launch(**launch_kwargs(studio, host, port))
    finally:
        studio.close()
