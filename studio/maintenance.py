"""Start-up upkeep of what older studios stored: start-image paths in recipes and MP4s.

Studios before the recipe kept the start image's upload path (often the upload's own file name)
in each take's stored request and in its MP4's embedded settings, which a share link hands to
anyone. At start-up, every such take's stored request loses the path, and its MP4 is rewritten
with the cleaned settings (the video stream copied, not re-encoded).
"""

from __future__ import annotations

import logging
from typing import Any

import storage
from pipelines.video import VideoFileError, read_settings, rewrite_settings

log = logging.getLogger(__name__)


def forget_stored_paths(store: storage.Store) -> int:
    """Clean every take whose recipe or MP4 still names a start image's path; returns how many."""
    cleaned: set[int] = set()
    while True:
        takes = [t for t in store.takes_with_stored_paths() if t.id not in cleaned]
        if not takes:
            return len(cleaned)
        for take in takes:
            cleaned.add(take.id)
            video = store.media_of(take, "video")
            if video is not None:
                try:
                    rewrite_settings(video, _without_path(read_settings(video)))
                except (VideoFileError, OSError) as exc:
                    log.warning("take %s: its MP4 keeps its old settings (%s)", take.id, exc)
            try:
                store.forget_stored_path(take.id)
            except storage.StorageError as exc:
                log.warning("take %s: its stored request keeps the path for now (%s)", take.id, exc)


def _without_path(settings: dict[str, Any]) -> dict[str, Any]:
    """MP4 settings with the start image's path removed, in either the studio's flat shape or the
    command line's {"request": ...} shape."""
    if isinstance(settings.get("request"), dict):
        return {**settings, "request": {**settings["request"], "image_path": None}}
    return {**settings, "image_path": None}
