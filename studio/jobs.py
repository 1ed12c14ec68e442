"""Submitting, watching and cancelling takes: what the UI and the API call.

A submission stores the take as queued (with its recipe and start image) and returns at once; a
worker runs it whether or not anyone watches. `watch(take_id)` yields the take's events
(`studio.take_events`) from the bus until its `TakeFinished`; closing the watch leaves the take
running, so a closed or reloaded tab loses nothing. When nothing arrives for a while, the watch
reads the take's row itself, so a take run by another process, or an event lost on the way,
still ends its watch.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import replace
from typing import Iterator

import storage
from pipelines.recipe import Recipe, file_sha256
from pipelines.request import variation_seeds

from . import hosting
from .bus import TakeBus
from .limits import Limits
from .scratch import ScratchSpace
from .take_events import TakeEvent, TakeFinished, TakeQueued, TakeStarted
from .worker import Worker

log = logging.getLogger(__name__)

WATCH_POLL_S = 1.0


class Jobs:
    """The queue as the studio's front ends see it."""

    def __init__(self, store: storage.Store, bus: TakeBus, scratch: ScratchSpace,
                 limits: Limits | None = None, worker: Worker | None = None,
                 poll_s: float = WATCH_POLL_S) -> None:
        self.store = store
        self.bus = bus
        self.scratch = scratch
        self.limits = limits or Limits()
        self.worker = worker  # this process's own worker, if it has one
        self.poll_s = poll_s

    def submit(self, owner: str, project_id: int, recipe: Recipe, image: str | None = None,
               parent_id: int | None = None, parent_kind: str | None = None,
               end_image: str | None = None) -> storage.TakeRecord:
        """Queue a take; its start and end images (scratch or upload files) are stored with it
        and the scratch copies let go. QueueFullError when the owner has too many takes waiting."""
        try:
            recipe = _with_images(recipe, image, end_image)
            take = self.store.submit_take(owner, project_id, recipe.to_dict(), image=image,
                                          parent_id=parent_id, parent_kind=parent_kind,
                                          max_unfinished=self.limits.max_queued,
                                          end_image=end_image)
        finally:
            self.scratch.discard(image)
            self.scratch.discard(end_image)
        self._wake(take.id)
        return take

    def submit_variations(self, owner: str, project_id: int, recipe: Recipe, count: int,
                          image: str | None = None,
                          end_image: str | None = None) -> list[storage.TakeRecord]:
        """Queue `count` (2-8) takes of one recipe with consecutive seeds, as one batch."""
        seeds = variation_seeds(recipe.request.seed, count)
        try:
            recipe = _with_images(recipe, image, end_image)
            recipes = [replace(recipe, request=replace(recipe.request, seed=seed)).to_dict()
                       for seed in seeds]
            takes = self.store.submit_batch(owner, project_id, recipes, image=image,
                                            end_image=end_image,
                                            max_unfinished=self.limits.max_queued)
        finally:
            self.scratch.discard(image)
            self.scratch.discard(end_image)
        for take in takes:
            self._wake(take.id)
        return takes

    def _wake(self, take_id: int) -> None:
        """Tell this process's worker a take is waiting."""
        if self.worker is not None:
            if hosting.on_zero_gpu():  # the GPU call must see the visitor who asked for it
                self.worker.remember_context(take_id, contextvars.copy_context())
            self.worker.wake()

    def watch(self, take_id: int) -> Iterator[TakeEvent]:
        """The take's events until it ends (see module docstring)."""
        watch = self.bus.watch(take_id)
        try:
            take = self.store.find_take(take_id)
            if take is not None and take.status == storage.TakeStatus.PENDING:
                yield TakeQueued(take_id, self.store.queue_positions(take.owner).get(take_id))
            started = False
            while take is not None and not take.finished:
                event = watch.get(timeout=self.poll_s)
                if event is not None:
                    started = started or isinstance(event, TakeStarted)
                    yield event
                    if isinstance(event, TakeFinished):
                        return
                    continue
                take = self.store.find_take(take_id)  # quiet: another process may run it
                if take is not None and take.status == storage.TakeStatus.RUNNING and not started:
                    started = True
                    yield TakeStarted(take_id, take.total_steps or 0)
            if take is not None:
                yield _finished(take)
        finally:
            watch.close()

    def cancel(self, owner: str | None, take_id: int) -> bool:
        """Cancel a queued take now, or stop a running one within a step (owner None: an
        operator). False when the owner has no such take still queued or running."""
        before = self.store.find_take(take_id) if owner is None else self.store.get_take(owner, take_id)
        if before is None or before.finished:
            return False
        try:
            take = self.store.request_cancel(take_id, owner)
        except storage.NotFoundError:
            return False
        if self.worker is not None:
            self.worker.cancel(take_id)
        if take.finished:  # it was still queued: cancelled now, and its watchers hear so at once
            self.bus.publish(take_id, TakeFinished(take, take.error or ""))
        return True

    def decode_again(self, owner: str, take_id: int) -> storage.TakeRecord:
        """Queue a failed take that kept its latents, for a worker to decode (no denoising)."""
        take = self.store.decode_again(owner, take_id)
        if self.worker is not None:
            self.worker.wake()
        return take

    def positions(self, owner: str) -> dict[int, int]:
        """The owner's queued takes and their places in line."""
        return self.store.queue_positions(owner)


def _with_images(recipe: Recipe, image: str | None, end_image: str | None) -> Recipe:
    """The recipe naming its start and end images by content hash, as they will be stored."""
    if image:
        recipe = replace(recipe, start_image=file_sha256(image))
    if end_image:
        recipe = replace(recipe, end_image=file_sha256(end_image))
    return recipe


def _finished(take: storage.TakeRecord) -> TakeFinished:
    """A TakeFinished read back from the take's row."""
    return TakeFinished(take, take.error or "")
