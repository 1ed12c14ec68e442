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

from .handlers import Handlers
from .limits import MAX_IMAGE_BYTES, BodyLimit, Limits, MiB
from .maintenance import forget_stored_paths
from .media_links import media_routes
from .owners import load_secrets
from .placeholders import write_placeholders
from .runner import SAVE_WAIT_S, Runner
from .scratch import ScratchSpace
from .share import studio_share_routes
from .ui import STATIC_DIR, build_ui

log = logging.getLogger(__name__)

MAX_UPLOAD = f"{MAX_IMAGE_BYTES // MiB}mb"
QUEUE_SLOTS = 8  # concurrent non-generation events (browsing, listing); generation has its own


@dataclass
class Studio:
    """Everything the running studio holds: the Blocks, storage, the model manager and runner."""

    demo: gr.Blocks
    db: storage.Database
    manager: ModelManager
    runner: Runner
    handlers: Handlers
    data_dir: Path

    def close(self) -> None:
        """Stop serving, close the database and remove the scratch folder."""
        self.demo.close()
        self.manager.unload()
        self.db.close()
        self.handlers.scratch.remove()


def build_studio(data_dir: Path, weights: Mapping[str, str], *,
                 preview_interval_s: float = 0.3, manager: ModelManager | None = None,
                 limits: Limits | None = None, save_wait_s: float = SAVE_WAIT_S) -> Studio:
    """Open the data folder and build the studio's services and UI (nothing loads a model yet).

    Raises StorageError (the folder is in use, read-only, or its database damaged) or ValueError
    (a bad setting in the environment) with a sentence, before anything is served.
    """
    data_dir = Path(data_dir)
    limits = limits or Limits.from_env()
    db = storage.Database.open(data_dir)
    try:
        forget_stored_paths(db)
        secrets = load_secrets(data_dir)
        scratch = ScratchSpace(data_dir)
        manager = manager or ModelManager(weights, cache_dir=data_dir / "cache")
        runner = Runner(db, Engine(manager), preview_interval_s=preview_interval_s,
                        max_queued=limits.max_queued, save_wait_s=save_wait_s,
                        discard_input=scratch.discard)
        placeholders = write_placeholders(scratch.placeholders)
        handlers = Handlers(db, manager, runner, placeholders, secrets, scratch, limits)
        demo = build_ui(handlers)
    except BaseException:
        db.close()
        raise
    return Studio(demo, db, manager, runner, handlers, data_dir)


def app_routes(studio: Studio) -> list[Any]:
    """Our own routes, matched before Gradio's: share pages and signed media URLs."""
    return [*studio_share_routes(studio.db), *media_routes(studio.db, studio.handlers.signer)]


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
          port: int = 7860) -> None:
    """Build the studio and serve it until interrupted."""
    studio = build_studio(data_dir, weights)
    studio.demo.queue(default_concurrency_limit=QUEUE_SLOTS)
    try:
        studio.demo.launch(**launch_kwargs(studio, host, port))
    finally:
        studio.db.close()
        studio.handlers.scratch.remove()
