"""View copies: media files handed to Gradio from a private temp folder, never from the media folder.

The media folder is not in Gradio's `allowed_paths`, so `/gradio_api/file=<media path>` is refused.
A UI handler instead returns a hard link (a copy across file systems) in a folder under
`tempfile.gettempdir()`, which Gradio accepts for returned files: it copies the file into its own
content-addressed cache and serves it from there (purged by `delete_cache`). Media file names are
already unique (kind + 128 random bits), so one link per file is reused, and links older than
`ttl_s` are swept so deleted takes do not live on here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_TTL_S = 1800.0


class ViewCopies:
    """Hands out temp-folder links to media files and sweeps old ones."""

    def __init__(self, folder: Path | None = None, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="wan-studio-view-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.folder.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()):
            raise ValueError(f"The view folder must be under {tempfile.gettempdir()} so Gradio "
                             f"accepts files from it; got {self.folder}.")
        self.ttl_s = ttl_s
        self._made: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_sweep = time.monotonic()

    def of(self, source: Path) -> str:
        """A path to show `source` through Gradio (a link in the view folder)."""
        source = Path(source)
        target = self.folder / source.name
        with self._lock:
            self._sweep_if_due()
            if source.name not in self._made or not target.is_file():
                partial = target.with_name(f".{target.name}.{threading.get_ident()}")
                try:
                    os.link(source, partial)
                except OSError:  # another file system, or links not allowed: copy instead
                    shutil.copyfile(source, partial)
                os.replace(partial, target)
            self._made[source.name] = time.monotonic()  # in use again: keep it a while longer
        return str(target)

    def sweep(self, now: float | None = None) -> int:
        """Remove links older than ttl_s; returns how many went."""
        now = time.monotonic() if now is None else now
        old = [name for name, made in self._made.items() if now - made > self.ttl_s]
        for name in old:
            (self.folder / name).unlink(missing_ok=True)
            del self._made[name]
        self._last_sweep = now
        return len(old)

    def _sweep_if_due(self) -> None:
        if time.monotonic() - self._last_sweep > self.ttl_s / 4:
            self.sweep()
