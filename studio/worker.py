"""A worker: claims queued takes from the database, runs them, records them, reports them.

One worker serves one device. In the default studio it is a thread of the web process; with
PostgreSQL, `python app.py worker --device cuda:N` runs one per GPU, on any machine that shares
the data folder. A worker:

- claims the take whose owner has waited longest (`storage.Store.claim`), under a lease that a
  heartbeat renews while it runs, so a worker killed mid-take is noticed and its take queued
  again (once);
- streams the engine's events (`pipelines.stream`), records each step on the take's row (which
  also brings back a cancel asked for anywhere), renders a preview at most every
  `preview_interval_s` (the first of each expert stage always), and publishes both to the bus;
- writes the MP4 and poster with the completed recipe embedded and ends the take; a save that
  fails for lack of disk space waits for room and retries once, and an end that cannot be written
  at all is written once it can (before the next claim). Whatever happens, the take's watchers
  get one `TakeFinished`, and the worker goes on to the next take.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import storage
from pipelines.events import (CancelledEvent, DecodingEvent, DoneEvent, FailedEvent, PreviewEvent,
                              StepEvent)
from pipelines.recipe import Recipe, weights_label
from pipelines.errors import StudioError
from pipelines.stream import EventStream

from . import hosting
from .bus import TakeBus
from .progress_view import animated_webp
from .shots import assemble_shot
from .take_events import PreviewImage, TakeFinished, TakeStarted

log = logging.getLogger(__name__)

SAVE_WAIT_S = 60.0  # how long a finished take waits for disk space before it fails
SAVE_MARGIN_BYTES = 4 * 1024 * 1024  # room for the database's own writes beside the files
POLL_S = 1.0  # how often an idle worker looks for takes queued by other processes
CANCELLED = "Cancelled: the take is kept."


LEASE_ENV = "WAN_STUDIO_LEASE_S"


def lease_seconds() -> float:
    """How long a worker's claim holds without renewal ($WAN_STUDIO_LEASE_S, default 30): a dead
    worker's take is queued again this long after its last sign of life."""
    try:
        value = float(os.environ.get(LEASE_ENV, storage.LEASE_S))
    except ValueError:
        raise ValueError(f"{LEASE_ENV} must be a number of seconds.") from None
    if not 1 <= value <= 3600:
        raise ValueError(f"{LEASE_ENV} must be between 1 and 3600 seconds.")
    return value


def worker_name() -> str:
    """A name no other worker has: host, process and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


def cancelled_message(steps_done: int, total: int) -> str:
    """What a cancelled take's record says."""
    if steps_done <= 0:
        return "Cancelled before the first step."
    return f"Cancelled after {steps_done} of {total} steps."


def failure_message(exc: BaseException) -> str:
    """One sentence for a failure nobody foresaw (the details go to the log)."""
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory: try a smaller size or fewer frames, or a memory "
                "profile for a smaller card (--profile).")
    return f"The run failed unexpectedly ({type(exc).__name__}); try again."


@dataclass
class _Job:
    take: storage.TakeRecord
    recipe: Recipe
    cancel: threading.Event = field(default_factory=threading.Event)
    beat_stop: threading.Event = field(default_factory=threading.Event)
    lost: bool = False  # the lease was lost: another worker may run it now
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Runs queued takes on one device (see module docstring)."""

    def __init__(self, store: storage.Store, stream: EventStream, bus: TakeBus, *,
                 name: str | None = None, variants: Sequence[str] | None = None,
                 is_demo: Callable[[str], bool] = lambda variant: False,
                 lease_s: float | None = None, poll_s: float = POLL_S,
                 preview_interval_s: float = 0.3, save_wait_s: float = SAVE_WAIT_S,
                 write_video: Callable[..., Path] | None = None,
                 write_poster: Callable[..., Path] | None = None) -> None:
        self.store = store
        self.stream = stream
        self.bus = bus
        self.name = name or worker_name()
        self.variants = None if variants is None else list(variants)
        self.is_demo = is_demo
        self.lease_s = lease_seconds() if lease_s is None else lease_s
        self.poll_s = poll_s
        self.preview_interval_s = preview_interval_s
        self.save_wait_s = save_wait_s
        self._write_video = write_video
        self._write_poster = write_poster
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: dict[int, _Job] = {}
        self._contexts: dict[int, contextvars.Context] = {}
        self._unrecorded: list[tuple[int, str, str]] = []  # (take, status, message)
        self._last_sweep = 0.0

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> "Worker":
        """Run the worker in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self.run_forever, name=f"worker-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the take in hand (which is cancelled) and wait for the thread."""
        self._stopping.set()
        with self._lock:
            for job in self._current.values():
                job.cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A take was just queued: look now rather than at the next poll."""
        self._wake.set()

    def run_forever(self) -> None:
        """Claim and run takes until stopped; a database that is down is waited out."""
        backoff = self.poll_s
        while not self._stopping.is_set():
            try:
                if not self.run_once():
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                backoff = self.poll_s
            except storage.StorageError as exc:  # the database is gone for now: keep trying
                log.warning("worker %s: %s; trying again in %.0f s", self.name, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # noqa: BLE001 - one bad take must not end the worker
                log.exception("worker %s: unexpected failure; carrying on", self.name)
                self._stopping.wait(self.poll_s)

    def run_once(self) -> bool:
        """Claim one queued take and run it to its end; False when none was queued."""
        self._record_unrecorded()
        now = time.monotonic()
        if now - self._last_sweep > self.lease_s / 3:
            self._last_sweep = now
            for take_id in self.store.release_expired()[0]:
                log.warning("take %s: its worker stopped renewing its lease; queued again", take_id)
        take = self.store.claim(self.name, self.variants, lease_s=self.lease_s)
        if take is None:
            return False
        self._run(take)
        return True

    def remember_context(self, take_id: int, context: contextvars.Context) -> None:
        """The submitting request's context: ZeroGPU reads the visitor from it in the GPU call."""
        with self._lock:
            self._contexts[take_id] = context

    def cancel(self, take_id: int) -> bool:
        """Stop the take if this worker runs it now (within a step); False otherwise."""
        with self._lock:
            job = self._current.get(take_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    def running(self) -> list[int]:
        """The takes this worker runs now."""
        with self._lock:
            return list(self._current)

    # -- one take --------------------------------------------------------------------------------

    def _run(self, take: storage.TakeRecord) -> None:
        """Run a claimed take; always ends by publishing its TakeFinished."""
        finished: TakeFinished | None = None
        job: _Job | None = None
        try:
            recipe = Recipe.from_dict(take.request)
            job = _Job(take, recipe)
            with self._lock:
                self._current[take.id] = job
                context = self._contexts.pop(take.id, None)
            finished = self._attempt(job, context)
        except Exception as exc:  # noqa: BLE001 - the take ends, the worker goes on
            log.exception("take %s could not be run", take.id)
            message = str(exc) if isinstance(exc, storage.StorageError) else failure_message(exc)
            finished = self._end(take, "failed", message)
        finally:
            with self._lock:
                self._current.pop(take.id, None)
            if finished is not None:
                self.bus.publish(take.id, finished)

    def _attempt(self, job: _Job, context: contextvars.Context | None) -> TakeFinished | None:
        take = job.take
        request = job.recipe.request
        # the stored start and end images go back into the request as files the engine reads
        for kind, stored, field_name, which in (("image", take.image_path, "image_path", "start"),
                                                ("end_image", take.end_image_path,
                                                 "last_image_path", "end")):
            if not stored:
                continue
            path = self.store.media_of(take, kind)
            if path is None:
                return self._end(take, "failed", f"This take's {which} image is missing from the "
                                 "media folder; upload it again and generate a new take.")
            request = replace(request, **{field_name: str(path)})
        latents = self._kept_latents(take)
        self.bus.publish(take.id, TakeStarted(take.id, request.steps))
        beat = threading.Thread(target=self._heartbeat, args=(job,), name=f"lease-{take.id}",
                                daemon=True)
        beat.start()
        try:
            outcome = self._drive(job, request, context, latents)
        finally:
            job.beat_stop.set()
            beat.join(timeout=5)
        if job.lost:
            log.warning("take %s: lost its lease while running; another worker has it", take.id)
            return None  # it is someone else's now: say nothing, record nothing
        if isinstance(outcome, DoneEvent):
            return self._save(job, outcome)
        if isinstance(outcome, CancelledEvent):
            return self._end(take, "cancelled", cancelled_message(outcome.steps_done, request.steps),
                             message=CANCELLED)
        if outcome.latents is not None:  # denoised, but the decode failed: keep the latents
            return self._end_keeping(take, outcome, request)
        return self._end(take, "failed", outcome.message)

    def _kept_latents(self, take: storage.TakeRecord) -> Any:
        """The latents a failed decode of this take kept, when it was queued to decode them."""
        path = self.store.media_of(take, "latents") if take.latents_path else None
        if path is None:
            return None
        from pipelines.decode import load_latents

        return load_latents(path)[0]

    def _end_keeping(self, take: storage.TakeRecord, failed: FailedEvent,
                     request: Any) -> TakeFinished:
        """End a take whose decode failed, keeping its latents so "decode again" can finish it."""
        from pipelines.decode import save_latents

        message = f"{failed.message} Its denoised latents are kept: Decode again to finish it."
        with tempfile.TemporaryDirectory(prefix="wan-latents-") as tmp:
            kept = save_latents(Path(tmp) / "latents.safetensors", failed.latents,
                                request.to_json())
            try:
                ended = self.store.end(take.id, self.name, "failed", error=message, latents=kept)
            except (storage.DatabaseError, OSError) as exc:  # no room for them: end it plainly
                log.error("take %s: its latents could not be kept: %s", take.id, exc)
                return self._end(take, "failed", failed.message)
        return TakeFinished(ended, message)

    def _drive(self, job: _Job, request: Any, context: contextvars.Context | None,
               latents: Any = None) -> DoneEvent | FailedEvent | CancelledEvent:
        """Run the engine's stream, recording and publishing as it goes; returns how it ended."""
        zero_gpu = hosting.on_zero_gpu()
        # A threading.Event cannot reach ZeroGPU's worker process: there, closing the stream
        # (which `spaces` passes on to the worker) is what stops the run.
        cancel = None if zero_gpu else job.cancel
        events = (self.stream(request, cancel, latents=latents) if latents is not None
                  else self.stream(request, cancel))
        last_preview, last_stage, steps = -1e9, None, 0
        try:
            for event in _in_context(events, context):
                match event:
                    case StepEvent():
                        steps = event.index
                        self._record_step(job, event)
                        self.bus.publish(job.take.id, event)
                    case PreviewEvent():
                        now = time.monotonic()
                        if event.expert == last_stage and now - last_preview < self.preview_interval_s:
                            continue  # too soon: the next one will show
                        last_preview, last_stage = now, event.expert
                        self.bus.publish(job.take.id, PreviewImage(
                            event.index, event.total, event.expert, animated_webp(event.frames)))
                    case DecodingEvent():
                        self.bus.publish(job.take.id, event)
                    case DoneEvent() | FailedEvent() | CancelledEvent():
                        return event
                if job.cancel.is_set() and zero_gpu:
                    return CancelledEvent(steps)
        finally:
            events.close()
        return FailedEvent("The run ended without a result; try again.")

    def _record_step(self, job: _Job, event: StepEvent) -> None:
        """Write the step (renewing the lease) and pick up a cancel asked for elsewhere.

        Progress is advisory: a write that fails (a full disk, say) is logged and skipped, and
        the run goes on; the save at the end is where a failure must end the take.
        """
        try:
            take = self.store.renew(job.take.id, self.name, event.index, event.total, self.lease_s)
        except storage.LeaseLostError:
            job.lost = True
            job.cancel.set()
            return
        except storage.DatabaseError as exc:
            log.warning("take %s: step %s not recorded: %s", job.take.id, event.index, exc)
            return
        if take.cancel_requested:
            job.cancel.set()

    def _heartbeat(self, job: _Job) -> None:
        """Renew the lease every third of its length while a step or the decode takes long."""
        while not job.beat_stop.wait(self.lease_s / 3):
            try:
                if self.store.renew(job.take.id, self.name, lease_s=self.lease_s).cancel_requested:
                    job.cancel.set()
            except storage.LeaseLostError:
                job.lost = True
                job.cancel.set()
                return
            except storage.StorageError as exc:
                log.warning("take %s: lease not renewed: %s", job.take.id, exc)

    # -- recording -------------------------------------------------------------------------------

    def _save(self, job: _Job, done: DoneEvent) -> TakeFinished:
        """Write the MP4 (the completed recipe embedded) and the poster, and end the take.

        If the data folder's disk is full, wait (up to save_wait_s) until it has room for the
        files and retry once, so a finished run is not thrown away for a moment's lack of space.
        """
        result = done.result
        recipe = job.recipe.ran_with(
            weights=weights_label(result.weights_source, self.is_demo(result.request.variant)),
            profile=result.profile, loras=tuple(asdict(lora) for lora in result.loras))
        metadata = recipe.to_dict()
        write_video, write_poster = self._writers()
        with tempfile.TemporaryDirectory(prefix="wan-take-") as tmp:
            video = write_video(result.frames, Path(tmp) / "video.mp4", result.request.fps, metadata)
            poster = write_poster(result.frames[0], Path(tmp) / "poster.jpg")
            for attempt in (1, 2):
                try:
                    take = self.store.end(job.take.id, self.name, "completed", video=video,
                                          poster=poster, recipe=metadata)
                    take, notices = self._with_shot(take, list(result.notices))
                    return TakeFinished(take, " ".join(notices), result.elapsed_s)
                except storage.LeaseLostError:
                    raise
                except (storage.DatabaseError, OSError) as exc:
                    full = _disk_full(exc)
                    if attempt == 2 or not full:
                        return self._end(job.take, "failed", _save_failure(exc))
                    needed = video.stat().st_size + poster.stat().st_size + SAVE_MARGIN_BYTES
                    log.warning("take %s: the disk is full; waiting up to %.0f s for %d bytes",
                                job.take.id, self.save_wait_s, needed)
                    self._wait_for_room(needed)
        raise AssertionError("unreachable")

    def _with_shot(self, take: storage.TakeRecord,
                   notices: list[str]) -> tuple[storage.TakeRecord, list[str]]:
        """A completed extension with its parent's shot and itself assembled into one MP4; the
        take stays completed (one part) when that fails, with a notice saying why."""
        if take.parent_kind != "extend":
            return take, notices
        try:
            return assemble_shot(self.store, take), notices
        except (StudioError, storage.StorageError, OSError) as exc:
            log.warning("take %s: the shot was not assembled: %s", take.id, exc)
            return take, [*notices, f"The longer shot was not assembled: {exc}"]
        except Exception:  # noqa: BLE001 - the take is saved already; only its shot is lost
            log.exception("take %s: the shot was not assembled", take.id)
            return take, [*notices, "The longer shot was not assembled; the take itself is kept."]

    def _end(self, take: storage.TakeRecord, status: str, error: str,
             message: str | None = None) -> TakeFinished:
        """End the take failed or cancelled. If even that cannot be written (the disk is full),
        the watchers still hear of it, and the write is tried again before the next claim."""
        try:
            ended = self.store.end(take.id, self.name, status, error=error)
        except storage.LeaseLostError:
            ended = self.store.find_take(take.id) or take
        except Exception as exc:  # noqa: BLE001 - recording the end must never stop the worker
            log.error("could not record take %s as %s: %s", take.id, status, exc)
            with self._lock:
                self._unrecorded.append((take.id, status, error))
            ended = replace(take, status=storage.TakeStatus(status), error=error)
        return TakeFinished(ended, message if message is not None else error)

    def _record_unrecorded(self) -> None:
        """Write the ends that could not be written when their takes ended."""
        with self._lock:
            waiting, self._unrecorded = self._unrecorded, []
        for take_id, status, error in waiting:
            try:
                self.store.end(take_id, self.name, status, error=error)
            except storage.DatabaseError as exc:
                log.warning("take %s is still not recorded as %s: %s", take_id, status, exc)
                with self._lock:
                    self._unrecorded.append((take_id, status, error))
            except storage.StorageError as exc:  # queued again meanwhile, or ended elsewhere
                log.warning("take %s cannot be recorded as %s any more: %s", take_id, status, exc)

    def _wait_for_room(self, needed: int) -> bool:
        """Poll the data folder's free space until `needed` bytes fit or save_wait_s passes."""
        deadline = time.monotonic() + self.save_wait_s
        while True:
            try:
                if shutil.disk_usage(self.store.db.data_dir).free >= needed:
                    return True
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _writers(self) -> tuple[Callable[..., Path], Callable[..., Path]]:
        if self._write_video is None or self._write_poster is None:
            from pipelines.video import write_mp4, write_poster

            self._write_video = self._write_video or write_mp4
            self._write_poster = self._write_poster or write_poster
        return self._write_video, self._write_poster


def _in_context(events: Iterator[Any], context: contextvars.Context | None) -> Iterator[Any]:
    """Iterate `events` with every step run inside `context` (generators otherwise run in the
    caller's context, where ZeroGPU would not find the visitor)."""
    if context is None:
        yield from events
        return
    while True:
        try:
            yield context.run(next, events)
        except StopIteration:
            return


def _disk_full(exc: BaseException) -> bool:
    return getattr(exc, "disk_full", False) or getattr(exc, "errno", None) == errno.ENOSPC


def _save_failure(exc: BaseException) -> str:
    """The sentence a take that could not be saved ends with (the cause goes to the log)."""
    log.error("saving a take failed: %s", exc)
    if _disk_full(exc):
        return ("The take could not be saved: the studio's disk is full. Free some space in the "
                "data folder, then generate it again.")
    if isinstance(exc, storage.DatabaseError):
        return f"The take could not be saved: {exc}"
    return ("The take could not be saved (the data folder could not be written); generate it "
            "again, and tell the operator if it keeps happening.")
