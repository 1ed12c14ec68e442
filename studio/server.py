"""Builds the studio (database, model manager, engine, runner, Blocks) and serves it."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gradio as gr

import storage
from pipelines.engine import Engine
from pipelines.manager import ModelManager

from .handlers import Handlers
from .owners import browser_state_secret
from .placeholders import write_placeholders
from .runner import Runner
from .ui import STATIC_DIR, build_ui

log = logging.getLogger(__name__)

MAX_UPLOAD = "20mb"
QUEUE_SLOTS = 8  # concurrent non-generation events (browsing, listing); generation has one slot


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
        """Stop serving and close the database."""
        self.demo.close()
        self.manager.unload()
        self.db.close()


def build_studio(data_dir: Path, weights: Mapping[str, str], *,
                 preview_interval_s: float = 0.3, manager: ModelManager | None = None) -> Studio:
    """Open the data folder and build the studio's services and UI (nothing loads a model yet)."""
    data_dir = Path(data_dir)
    db = storage.Database.open(data_dir)
    manager = manager or ModelManager(weights, cache_dir=data_dir / "cache")
    runner = Runner(db, Engine(manager), preview_interval_s=preview_interval_s)
    placeholders = write_placeholders(Path(tempfile.mkdtemp(prefix="wan-studio-placeholders-")))
    handlers = Handlers(db, manager, runner, placeholders)
    demo = build_ui(handlers, browser_state_secret(data_dir))
    return Studio(demo, db, manager, runner, handlers, data_dir)


def share_routes_for(studio: Studio) -> list[Any]:
    """The share-link routes (studio/share.py), or none if that module offers no routes yet."""
    try:
        from . import share
    except ImportError:
        return []
    factory = getattr(share, "studio_share_routes", None)
    if factory is None:
        return []
    return list(factory(studio.db))


def launch_kwargs(studio: Studio, host: str, port: int) -> dict[str, Any]:
    """Keyword arguments for demo.launch(): theme, our CSS, share routes, media-only file access."""
    media = Path(studio.db.media.root).resolve()
    data = studio.data_dir.resolve()
    if media == data or not media.is_relative_to(data):
        raise ValueError(f"The media folder {media} must be a subfolder of the data folder {data}.")
    return {
        "server_name": host, "server_port": port, "share": False, "show_error": True,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate",
                                font=[gr.themes.Font("system-ui"), "sans-serif"],
                                font_mono=[gr.themes.Font("ui-monospace"), "monospace"]),
        "css_paths": [STATIC_DIR / "studio.css"],
        "app_kwargs": {"routes": share_routes_for(studio)},
        "allowed_paths": [str(media)],  # never the data folder: studio.db lives there
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
