"""Job lifecycle: the only module that knows both the engine and storage.

A job is one take: `Runner.start` adds it (pending), `Runner.run` streams its updates while a
worker thread drives the engine (running -> progress -> completed | failed | cancelled, MP4 and
poster written through storage). The worker owns the lifecycle, so a closed stream (Gradio's
cancel, a closed tab) only sets the job's cancel flag, which the engine checks every step.
One fair slot keeps runs one at a time, in submission order, whatever the UI's concurrency.

The GPU work is `engine_events(engine)`: a generator of engine events wrapped by
`hosting.gpu_task`, so on ZeroGPU it runs inside `spaces.GPU` (in a forked worker whose events
come back by `yield`; callbacks could not cross that process boundary) and elsewhere it is a plain
generator in the job's worker thread, given the job's own cancel flag as before.
"""

from __future__ import annotations

import bisect
import errno
import logging
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

import storage
from pipelines.errors import GenerationCancelled, StudioError
from pipelines.events import (CancelledEvent, DecodingEvent, DoneEvent, FailedEvent, PreviewEvent,
                              StepEvent)
from pipelines.request import GenerationRequest

from . import hosting
from .limits import Limits

log = logging.getLogger(__name__)

UpdateKind = Literal["started", "step", "preview", "decoding", "done", "failed", "cancelled"]
FINAL_KINDS = ("done", "failed", "cancelled")
FINAL_EVENTS = (DoneEvent, FailedEvent, CancelledEvent)
SAVE_WAIT_S = 60.0  # how long a finished take waits for disk space before it fails
SAVE_MARGIN_BYTES = 4 * 1024 * 1024  # room for the database's own writes beside the files
RECORDING_FAILED = "The take could not be recorded; generate it again."


@dataclass(frozen=True)
class JobUpdate:
    """One thing the UI shows about a running take."""

    kind: UpdateKind
    take_id: int
    step: int = 0
    total: int = 0
    expert: str | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    preview_event: PreviewEvent | None = field(default=None, repr=False)
    message: str = ""
    take: storage.TakeRecord | None = None

    @property
    def preview(self) -> np.ndarray | None:
        """The preview frames, rendered on first look: previews the stream skips cost nothing."""
        return None if self.preview_event is None else self.preview_event.frames


@dataclass
class Job:
    """A take being run: its id, owner, request and cancel flag."""

    take_id: int
    owner: str
    request: GenerationRequest
    stored: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    updates: "queue.Queue[JobUpdate]" = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None


class QueueFull(StudioError):
    """The owner already has as many takes queued or running as the studio allows."""


class Runner:
    """Runs takes one at a time through an engine and records them in storage."""

    def __init__(self, db: storage.Database, engine: Any, preview_interval_s: float = 0.3,
                 write_video: Callable[..., Path] | None = None,
                 write_poster: Callable[..., Path] | None = None, max_queued: int | None = None,
                 save_wait_s: float = SAVE_WAIT_S,
                 discard_input: Callable[[str | None], None] | None = None) -> None:
        self.db = db
        self.engine = engine
        self._gpu_events = hosting.gpu_task(engine_events(engine))
        self.preview_interval_s = preview_interval_s
        self._write_video = write_video
        self._write_poster = write_poster
        self.max_queued = max_queued
        self.save_wait_s = save_wait_s
        self._discard_input = discard_input or (lambda path: None)
        self._slot = _FairSlot()
        self._unrecorded: list[tuple[str, int, str, str]] = []  # (owner, take, status, error)
        self._jobs: dict[int, Job] = {}
        self._jobs_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, owner: str, project_id: int, request: GenerationRequest, stored: dict[str, Any],
              parent_id: int | None = None, parent_kind: str | None = None) -> Job:
        """Add the take as pending (its start image copied into the media store, the scratch copy
        let go); raises QueueFull when the owner has `max_queued` takes waiting or running."""
        self._record_unrecorded()  # a take that ended while the disk was full must not count
        try:
            with self.db.session() as s, s.begin():
                # One write transaction: two tabs submitting at once cannot both slip under the cap.
                if self.max_queued is not None and storage.count_unfinished(s, owner) >= self.max_queued:
                    raise QueueFull(Limits(self.max_queued).queue_full_message())
                take = storage.add_take(s, owner, project_id, stored, parent_id=parent_id,
                                        parent_kind=parent_kind, image=request.image_path)
        finally:
            self._discard_input(request.image_path)
        if take.image_path:
            # the engine reads the stored copy, so the take never depends on Gradio's upload cache
            request = replace(request, image_path=str(self.db.media.resolve(take.image_path)))
        job = Job(take.id, owner, request, stored)
        with self._jobs_lock:
            self._jobs[take.id] = job
        return job

    def run(self, job: Job) -> Iterator[JobUpdate]:
        """Run a started job in a worker thread, yielding its updates until the final one."""
        job.thread = threading.Thread(target=self._work, args=(job,), name=f"take-{job.take_id}",
                                      daemon=True)
        job.thread.start()
        finished = False
        try:
            yield from self._stream(job)
            finished = True
        finally:
            if not finished:
                job.cancel.set()  # the stream was closed early: stop at the next step
                job.thread.join(timeout=30)

    def generate(self, owner: str, project_id: int, request: GenerationRequest,
                 stored: dict[str, Any], parent_id: int | None = None,
                 parent_kind: str | None = None) -> Iterator[JobUpdate]:
        """Start and run a take in one go."""
        job = self.start(owner, project_id, request, stored, parent_id, parent_kind)
        ahead = self.ahead_of(job.take_id)
        message = (f"Queued: {ahead} take{'s' if ahead != 1 else ''} ahead of this one." if ahead
                   else "")
        yield JobUpdate("started", job.take_id, total=request.steps, message=message)
        yield from self.run(job)

    def cancel(self, owner: str | None, take_id: int) -> bool:
        """Ask a take to stop (owner None: an operator, any take). A queued take is cancelled at
        once, a running one stops within a step. False when there is no such take of this owner
        still queued or running."""
        with self._jobs_lock:
            job = self._jobs.get(take_id)
        if job is not None and owner is not None and job.owner != owner:
            return False
        if job is not None:
            job.cancel.set()
        try:  # the row too: a queued take ends now, and another process may be running it
            with self.db.session() as s, s.begin():
                take = storage.request_cancel(s, take_id, owner)
        except storage.NotFoundError:
            return False
        return job is not None or take.cancel_requested or (
            take.status == "cancelled" and take.error == storage.CANCELLED_BEFORE_START)

    def ahead_of(self, take_id: int) -> int:
        """How many takes started before this one are still waiting or running here."""
        with self._jobs_lock:
            return sum(1 for other in self._jobs if other < take_id)

    def running(self) -> list[int]:
        """Take ids currently started and not yet finished."""
        with self._jobs_lock:
            return list(self._jobs)

    # -- internals -------------------------------------------------------------------------

    def _stream(self, job: Job) -> Iterator[JobUpdate]:
        """Yield updates in order; a preview is skipped when a newer one of the same stage is
        already waiting, or when it comes sooner than preview_interval_s after the last one (the
        first preview of each expert stage always shows)."""
        last_preview = -1e9
        last_expert: str | None = None
        while True:
            update = job.updates.get()
            if update.kind == "preview":
                if update.expert == last_expert and (
                        _newer_preview_waiting(job.updates, update.expert)
                        or time.monotonic() - last_preview < self.preview_interval_s):
                    continue
                last_preview, last_expert = time.monotonic(), update.expert
            yield update
            if update.kind in FINAL_KINDS:
                return

    def _work(self, job: Job) -> None:
        """Run the job to its end; whatever happens, exactly one final update goes out and the
        slot is free again (a failure while recording ends the take, never the studio)."""
        final: JobUpdate | None = None
        try:
            final = self._lifecycle(job)
        except Exception as exc:  # noqa: BLE001 - the stream must end and the slot must free
            log.error("take %s could not be run or recorded: %s", job.take_id, exc,
                      exc_info=not isinstance(exc, storage.StorageError))
            message = str(exc) if isinstance(exc, storage.StorageError) else failure_message(exc)
            final = JobUpdate("failed", job.take_id, message=message,
                              take=self._finish(job, "failed", message))
        finally:
            with self._jobs_lock:
                self._jobs.pop(job.take_id, None)
            job.updates.put(final or JobUpdate("failed", job.take_id, message=RECORDING_FAILED))

    def _lifecycle(self, job: Job) -> JobUpdate:
        """Start, run and save one take; returns its final update."""
        try:
            # The slot goes in submission order, and a queued take that is cancelled leaves the
            # line now rather than when the take ahead of it finishes.
            if not self._slot.acquire(job.take_id, job.cancel):
                raise GenerationCancelled(storage.CANCELLED_BEFORE_START)
            try:
                if job.cancel.is_set():
                    raise GenerationCancelled(storage.CANCELLED_BEFORE_START)
                try:
                    with self.db.session() as s, s.begin():
                        storage.start_take(s, job.owner, job.take_id)
                except storage.TransitionError:  # cancelled in storage while it waited
                    raise GenerationCancelled(storage.CANCELLED_BEFORE_START) from None
                result = self._run_engine(job)
                take = self._save(job, result)
            finally:
                self._slot.release()
            return JobUpdate("done", job.take_id, total=job.request.steps, take=take,
                             elapsed_s=result.elapsed_s, message=" ".join(result.notices))
        except GenerationCancelled as exc:
            take = self._finish(job, "cancelled", str(exc) or "Cancelled.")
            return JobUpdate("cancelled", job.take_id, take=take,
                             message="Cancelled: the take is kept.")
        except (StudioError, storage.StorageError) as exc:
            take = self._finish(job, "failed", str(exc))
            return JobUpdate("failed", job.take_id, take=take, message=str(exc))

    def _run_engine(self, job: Job) -> Any:
        """Drive the GPU task's events; its last event says how the run ended."""
        # A threading.Event cannot reach ZeroGPU's worker process: there, closing the stream
        # (which spaces passes on to the worker) is what stops the run.
        cancel = None if hosting.on_zero_gpu() else job.cancel
        events = self._gpu_events(job.request, cancel)
        try:
            for event in events:
                if isinstance(event, DoneEvent):
                    return event.result
                if isinstance(event, FailedEvent):
                    raise StudioError(event.message)
                if isinstance(event, CancelledEvent):
                    raise GenerationCancelled(cancelled_message(event.steps_done,
                                                                job.request.steps))
                self._on_event(job, event)
                if job.cancel.is_set() and cancel is None:
                    events.close()
                    raise GenerationCancelled("Cancelled.")
        finally:
            events.close()
        raise StudioError("The run ended without a result; try again.")

    def _on_event(self, job: Job, event: Any) -> None:
        emit = job.updates.put
        elapsed = time.monotonic() - job.started
        if isinstance(event, StepEvent):
            self._record_progress(job, event)
            emit(JobUpdate("step", job.take_id, event.index, event.total, event.expert,
                           event.elapsed_s, event.eta_s))
        elif isinstance(event, PreviewEvent):
            emit(JobUpdate("preview", job.take_id, event.index, event.total, event.expert,
                           elapsed, preview_event=event))
        elif isinstance(event, DecodingEvent):
            emit(JobUpdate("decoding", job.take_id, event.total, event.total, elapsed_s=elapsed))
        elif isinstance(event, (DoneEvent, FailedEvent, CancelledEvent)):
            pass  # the engine's return value or exception is what _work acts on

    def _record_progress(self, job: Job, event: StepEvent) -> None:
        """Write the step to the take's row and pick up a cancel asked for elsewhere.

        Progress is advisory: a write that fails (disk full, say) is logged and skipped, and the
        run goes on; the final save below is where a failure must end the take.
        """
        try:
            with self.db.session() as s, s.begin():
                take = storage.update_progress(s, job.owner, job.take_id, event.index, event.total)
        except storage.DatabaseError as exc:
            log.warning("take %s: step %s not recorded: %s", job.take_id, event.index, exc)
            return
        if take.cancel_requested:
            job.cancel.set()

    def _save(self, job: Job, result: Any) -> storage.TakeRecord:
        """Write the MP4 (settings embedded) and the poster, then mark the take completed.

        If the data folder's disk is full, wait (up to save_wait_s) until it has room for the
        files and retry once, so a finished run is not thrown away for a moment's lack of space.
        """
        write_video, write_poster = self._writers()
        with tempfile.TemporaryDirectory(prefix="wan-take-") as tmp:
            video = write_video(result.frames, Path(tmp) / "video.mp4", result.request.fps,
                                job.stored)
            poster = write_poster(result.frames[0], Path(tmp) / "poster.jpg")
            for attempt in (1, 2):
                try:
                    with self.db.session() as s, s.begin():
                        return storage.finish_take(s, job.owner, job.take_id, "completed",
                                                   video=video, poster=poster)
                except (storage.DatabaseError, OSError) as exc:
                    full = getattr(exc, "disk_full", False) or getattr(exc, "errno", None) == errno.ENOSPC
                    if attempt == 2 or not full:
                        raise _save_failure(exc) from None
                    needed = video.stat().st_size + poster.stat().st_size + SAVE_MARGIN_BYTES
                    log.warning("take %s: the disk is full; waiting up to %.0f s for %d bytes",
                                job.take_id, self.save_wait_s, needed)
                    self._wait_for_room(needed)
        raise AssertionError("unreachable")

    def _wait_for_room(self, needed: int) -> bool:
        """Poll the data folder's free space until `needed` bytes fit or save_wait_s passes."""
        deadline = time.monotonic() + self.save_wait_s
        while True:
            try:
                if shutil.disk_usage(self.db.data_dir).free >= needed:
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

    def _finish(self, job: Job, status: str, error: str) -> storage.TakeRecord | None:
        """Mark the take failed or cancelled. If even that cannot be written (the disk is full),
        the stream still ends, and the write is tried again before the next take starts (or, if
        the studio stops first, start-up recovery marks it interrupted)."""
        try:
            return self._write_end(job.owner, job.take_id, status, error)
        except Exception as exc:  # noqa: BLE001 - recording the end must never stop the studio
            log.error("could not mark take %s %s: %s", job.take_id, status, exc)
            with self._jobs_lock:
                self._unrecorded.append((job.owner, job.take_id, status, error))
            return None

    def _write_end(self, owner: str, take_id: int, status: str, error: str) -> storage.TakeRecord | None:
        try:
            with self.db.session() as s, s.begin():
                return storage.finish_take(s, owner, take_id, status, error=error)
        except storage.TransitionError:  # it already ended (a queued take cancelled in storage)
            with self.db.read_session() as s, s.begin():
                return storage.get_take(s, owner, take_id)

    def _record_unrecorded(self) -> None:
        """Write the ends of takes that could not be recorded when they ended; those that still
        cannot be written (the disk is still full) wait for the next try."""
        with self._jobs_lock:
            waiting, self._unrecorded = self._unrecorded, []
        for owner, take_id, status, error in waiting:
            try:
                self._write_end(owner, take_id, status, error)
            except storage.DatabaseError as exc:
                log.warning("take %s is still not recorded as %s: %s", take_id, status, exc)
                with self._jobs_lock:
                    self._unrecorded.append((owner, take_id, status, error))
            except Exception as exc:  # noqa: BLE001 - start-up recovery is the last resort
                log.error("take %s cannot be recorded as %s (%s); a restart marks it "
                          "interrupted", take_id, status, exc)


class _FairSlot:
    """One take on the model at a time, handed out in submission order (a Lock is not fair)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: list[int] = []
        self._busy = False

    def acquire(self, ticket: int, cancelled: threading.Event) -> bool:
        """Wait for the slot behind every smaller ticket; False if `cancelled` is set first."""
        with self._changed:
            bisect.insort(self._waiting, ticket)
            try:
                while self._busy or self._waiting[0] != ticket:
                    if cancelled.is_set():
                        return False
                    self._changed.wait(0.1)
                self._busy = True
                return True
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()

    def release(self) -> None:
        """Hand the slot to the next ticket in line."""
        with self._changed:
            self._busy = False
            self._changed.notify_all()


def engine_events(engine: Any) -> Callable[..., Iterator[Any]]:
    """A generator function yielding the engine's events for one request, ending with its
    DoneEvent, FailedEvent or CancelledEvent; closing the generator cancels the run.

    The engine waits at each event until the consumer asks for the next one, as it did when the
    consumer was its callback: it never runs ahead of what the studio has shown and recorded.
    """

    def events(request: GenerationRequest,
               cancel: threading.Event | None = None) -> Iterator[Any]:
        stop = cancel or threading.Event()
        out: "queue.Queue[Any]" = queue.Queue()
        taken = threading.Semaphore(0)  # one release per event the consumer is done with
        closing = threading.Event()
        end = object()

        def emit(event: Any) -> None:
            out.put(event)
            if not closing.is_set():
                taken.acquire()

        def work() -> None:
            try:
                engine.generate(request, emit, stop)
            except BaseException:  # noqa: BLE001 - the engine emitted its Failed/CancelledEvent
                log.debug("the engine run for %s ended with an exception", request.variant,
                          exc_info=True)
            finally:
                out.put(end)

        thread = threading.Thread(target=work, name="engine", daemon=True)
        thread.start()
        last: Any = None
        try:
            while (last := out.get()) is not end:
                yield last
                taken.release()
        finally:
            if last is not end and not isinstance(last, FINAL_EVENTS):
                stop.set()  # closed early: the run stops at its next step
            closing.set()
            taken.release()  # free the engine if it waits on the event it sent last
            thread.join()

    return events


def cancelled_message(steps_done: int, total: int) -> str:
    """What a cancelled take's record says."""
    if steps_done <= 0:
        return "Cancelled before the first step."
    return f"Cancelled after {steps_done} of {total} steps."


def _newer_preview_waiting(updates: "queue.Queue[JobUpdate]", expert: str | None) -> bool:
    """Whether a later preview of the same expert stage is already queued."""
    with updates.mutex:
        return any(u.kind == "preview" and u.expert == expert for u in updates.queue)


def _save_failure(exc: BaseException) -> storage.StorageError:
    """The sentence a take that could not be saved ends with (the cause goes to the log)."""
    log.error("saving a take failed: %s", exc)
    if getattr(exc, "disk_full", False) or getattr(exc, "errno", None) == errno.ENOSPC:
        return storage.StorageError("The take could not be saved: the studio's disk is full. Free "
                                    "some space in the data folder, then generate it again.")
    if isinstance(exc, storage.DatabaseError):
        return storage.StorageError(f"The take could not be saved: {exc}")
    return storage.StorageError("The take could not be saved (the data folder could not be "
                                "written); generate it again, and tell the operator if it keeps "
                                "happening.")


def failure_message(exc: BaseException) -> str:
    """A one-sentence message for an unexpected failure (out-of-memory gets advice)."""
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory: try a smaller size, fewer frames, or start the studio "
                "with CPU offload.")
    return f"The run failed with {name}: {exc}".strip()
