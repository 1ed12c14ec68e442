"""The studio's one scratch folder: view copies, decoded API images, continue frames, placeholders.

Everything temporary the studio writes lives under one folder per data folder, inside the system
temp folder (Gradio serves returned files only from there). It is emptied at start-up, so a killed
process leaves nothing behind for long; an uploaded image's scratch copy goes as soon as the take
has stored it in the media store, and stray files are swept after `ttl_s`.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import time
from pathlib import Path

DEFAULT_TTL_S = 3600.0


class ScratchSpace:
    """`<tmp>/wan-studio-<hash of the data folder>/{files,views,placeholders}`, emptied at start."""

    def __init__(self, data_dir: Path, root: Path | None = None, ttl_s: float = DEFAULT_TTL_S) -> None:
        digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / f"wan-studio-{digest}"
        self.ttl_s = ttl_s
        shutil.rmtree(self.root, ignore_errors=True)  # what a killed process left
        self.files = self.root / "files"
        self.views = self.root / "views"
        self.placeholders = self.root / "placeholders"
        for folder in (self.files, self.views, self.placeholders):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)

    def new_file(self, suffix: str) -> Path:
        """A fresh path (random name, nothing written yet) for a scratch file."""
        self.sweep()
        return self.files / f"{secrets.token_hex(16)}{suffix}"

    def new_named(self, name: str) -> Path:
        """A fresh path whose file name is `name` (a download keeps it), in a folder of its own."""
        self.sweep()
        folder = self.files / secrets.token_hex(16)
        folder.mkdir(mode=0o700)
        return folder / name

    def discard(self, path: str | Path | None) -> None:
        """Remove a scratch file once it is no longer needed (paths elsewhere are left alone)."""
        if path is None:
            return
        candidate = Path(path)
        if candidate.parent.resolve() == self.files.resolve():
            candidate.unlink(missing_ok=True)

    def owns(self, path: str | Path | None) -> bool:
        """Whether `path` is one of this scratch folder's files."""
        return path is not None and Path(path).parent.resolve() == self.files.resolve()

    def sweep(self, now: float | None = None) -> int:
        """Remove scratch files older than ttl_s; returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        for entry in self.files.iterdir():
            try:
                if now - entry.stat().st_mtime > self.ttl_s:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def size(self) -> int:
        """Bytes held in scratch files (for tests and the operator)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def remove(self) -> None:
        """Remove the whole scratch folder (when the studio stops)."""
        shutil.rmtree(self.root, ignore_errors=True)
