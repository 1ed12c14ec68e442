"""Longer shots: when an extension completes, join it to its parent's shot in one MP4.

The shot is the chain of extensions this take ends, back to the take it began from, each part
colour-matched at its seam (`pipelines.extend.assemble_mp4`), embedding every part's recipe. The shot is stored beside
the take's own video (`TakeRecord.shot_path`), so the take stays what it was (one part) and the
shot is what the history and the player show for the chain.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import storage
from pipelines.errors import ShotError
from pipelines.extend import assemble_mp4
from pipelines.recipe import MAX_PARTS, Recipe

log = logging.getLogger(__name__)

MAX_SHOT_BYTES = 6 * 2**30  # frames held at once while joining (720p x 81 frames is 0.2 GiB a part)


def shown_video(store: storage.Store, take: storage.TakeRecord) -> Path | None:
    """The video a take plays as, in the studio and on its share page: an extension's whole
    shot when it has one, else its own video (None when neither is on disk)."""
    return store.media_of(take, "shot") or store.media_of(take, "video")


def shot_parts_of(store: storage.Store, take: storage.TakeRecord) -> list[storage.TakeRecord]:
    """The takes of the shot that `take` ends: its chain of extensions back to where it began."""
    lineage = store.lineage(take.owner, take.id)
    parts = [lineage[-1]]
    for ancestor in reversed(lineage[:-1]):
        if parts[0].parent_kind != "extend":
            break
        parts.insert(0, ancestor)
    return parts


def assemble_shot(store: storage.Store, take: storage.TakeRecord) -> storage.TakeRecord:
    """Store the shot of a completed extension; ShotError (a sentence) when it cannot be made.

    Every part is read from its own MP4, so a long chain is encoded once more, not once per
    extension (each re-encode would soften the earlier parts).
    """
    if take.parent_kind != "extend":
        return take
    parts = shot_parts_of(store, take)
    if len(parts) < 2:
        raise ShotError("The take this one extends was deleted, so there is no shot to join.")
    if len(parts) > MAX_PARTS:
        raise ShotError(f"A shot joins at most {MAX_PARTS} parts; this chain has {len(parts)}.")
    recipes = [Recipe.from_dict(part.request) for part in parts]
    frame_bytes = sum(r.request.frames * r.request.width * r.request.height * 3 for r in recipes)
    if frame_bytes > MAX_SHOT_BYTES:  # every part is decoded into memory to be joined
        raise ShotError(f"This shot's {len(parts)} parts come to {frame_bytes / 2**30:.1f} GiB of "
                        f"frames, more than the {MAX_SHOT_BYTES / 2**30:.0f} GiB a shot is joined "
                        "in; each part is kept as its own take.")
    videos = [store.media_of(part, "video") for part in parts]
    if any(video is None for video in videos):
        raise ShotError("A part of the shot has no video in the media folder, so it was not "
                        "assembled.")
    with tempfile.TemporaryDirectory(prefix="wan-shot-") as tmp:
        shot = assemble_mp4(videos, Path(tmp) / "shot.mp4", recipes)
        return store.set_shot(take.id, shot)
