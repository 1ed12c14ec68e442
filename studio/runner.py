"""Job lifecycle: the only module that knows both the engine and storage.

A job is one take: `Runner.start` adds it (pending), `Runner.run` streams its updates while a
worker thread drives the engine (running -> progress -> completed | failed | cancelled, MP4 and
poster written through storage). The worker owns the lifecycle, so a closed stream (Gradio's
cancel, a closed tab) only sets the job's cancel flag, which the engine checks every step.
One model lock keeps runs one at a time even if the UI's concurrency slot frees early.

The GPU work is `engine_events(engine)`: a generator of engine events wrapped by
`hosting.gpu_task`, so on ZeroGPU it runs inside `spaces.GPU` (in a forked worker whose events
come back by `yield`; callbacks could not cross that process boundary) and elsewhere it is a plain
generator in the job's worker thread, given the job's own cancel flag as before.
"""

from __future__ import annotations

import logging
import queue
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

log = logging.getLogger(__name__)

UpdateKind = Literal["started", "step", "preview", "decoding", "done", "failed", "cancelled"]
FINAL_KINDS = ("done", "failed", "cancelled")
FINAL_EVENTS = (DoneEvent, FailedEvent, CancelledEvent)


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


class Runner:
    """Runs takes one at a time through an engine and records them in storage."""

    def __init__(self, db: storage.Database, engine: Any, preview_interval_s: float = 0.3,
                 write_video: Callable[..., Path] | None = None,
                 write_poster: Callable[..., Path] | None = None) -> None:
        self.db = db
        self.engine = engine
        self._gpu_events = hosting.gpu_task(engine_events(engine))
        self.preview_interval_s = preview_interval_s
        self._write_video = write_video
        self._write_poster = write_poster
        self._model_lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._jobs_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, owner: str, project_id: int, request: GenerationRequest, stored: dict[str, Any],
              parent_id: int | None = None, parent_kind: str | None = None) -> Job:
        """Add the take as pending (copying its start image into the media store)."""
        with self.db.session() as s, s.begin():
            take = storage.add_take(s, owner, project_id, stored, parent_id=parent_id,
                                    parent_kind=parent_kind, image=request.image_path)
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
        yield JobUpdate("started", job.take_id, total=request.steps)
        yield from self.run(job)

    def cancel(self, owner: str, take_id: int) -> bool:
        """Ask a take of this owner to stop; a pending take that never ran is marked cancelled."""
        with self._jobs_lock:
            job = self._jobs.get(take_id)
        if job is not None and job.owner == owner:
            job.cancel.set()
            if job.thread is None:
                self._finish_unstarted(job)
            return True
        return False

    def running(self) -> list[int]:
        """Take ids currently started and not yet finished."""
        with self._jobs_lock:
            return list(self._jobs)

    # -- internals -------------------------------------------------------------------------

    def _finish_unstarted(self, job: Job) -> None:
        with self._jobs_lock:
            self._jobs.pop(job.take_id, None)
        with self.db.session() as s, s.begin():
            take = storage.get_take(s, job.owner, job.take_id)
            if take is not None and take.status == "pending":
                storage.finish_take(s, job.owner, job.take_id, "cancelled",
                                    error="Cancelled before it started.")

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
        emit = job.updates.put
        try:
            with self._model_lock:
                if job.cancel.is_set():
                    raise GenerationCancelled("Cancelled before it started.")
                with self.db.session() as s, s.begin():
                    storage.start_take(s, job.owner, job.take_id)
                result = self._run_engine(job)
            take = self._save(job, result)
            emit(JobUpdate("done", job.take_id, total=job.request.steps, take=take,
                           elapsed_s=result.elapsed_s, message=" ".join(result.notices)))
        except GenerationCancelled as exc:
            take = self._finish(job, "cancelled", str(exc) or "Cancelled.")
            emit(JobUpdate("cancelled", job.take_id, take=take, message="Cancelled: the take is kept."))
        except StudioError as exc:
            take = self._finish(job, "failed", str(exc))
            emit(JobUpdate("failed", job.take_id, take=take, message=str(exc)))
        except Exception as exc:  # e.g. torch.OutOfMemoryError: the take fails, the app keeps serving
            log.exception("take %s failed", job.take_id)
            message = failure_message(exc)
            take = self._finish(job, "failed", message)
            emit(JobUpdate("failed", job.take_id, take=take, message=message))
        finally:
            with self._jobs_lock:
                self._jobs.pop(job.take_id, None)

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
            with self.db.session() as s, s.begin():
                storage.update_progress(s, job.owner, job.take_id, event.index, event.total)
            emit(JobUpdate("step", job.take_id, event.index, event.total, event.expert,
                           event.elapsed_s, event.eta_s))
        elif isinstance(event, PreviewEvent):
            emit(JobUpdate("preview", job.take_id, event.index, event.total, event.expert,
                           elapsed, preview_event=event))
        elif isinstance(event, DecodingEvent):
            emit(JobUpdate("decoding", job.take_id, event.total, event.total, elapsed_s=elapsed))
        elif isinstance(event, (DoneEvent, FailedEvent, CancelledEvent)):
            pass  # the engine's return value or exception is what _work acts on

    def _save(self, job: Job, result: Any) -> storage.TakeRecord:
        """Write the MP4 (settings embedded) and the poster, then mark the take completed."""
        write_video, write_poster = self._writers()
        with tempfile.TemporaryDirectory(prefix="wan-take-") as tmp:
            video = write_video(result.frames, Path(tmp) / "video.mp4", result.request.fps,
                                job.stored)
            poster = write_poster(result.frames[0], Path(tmp) / "poster.jpg")
            with self.db.session() as s, s.begin():
                return storage.finish_take(s, job.owner, job.take_id, "completed",
                                           video=video, poster=poster)

    def _writers(self) -> tuple[Callable[..., Path], Callable[..., Path]]:
        if self._write_video is None or self._write_poster is None:
            from pipelines.video import write_mp4, write_poster

            self._write_video = self._write_video or write_mp4
            self._write_poster = self._write_poster or write_poster
        return self._write_video, self._write_poster

    def _finish(self, job: Job, status: str, error: str) -> storage.TakeRecord | None:
        try:
            with self.db.session() as s, s.begin():
                return storage.finish_take(s, job.owner, job.take_id, status, error=error)
        except storage.StorageError:
            log.exception("could not mark take %s %s", job.take_id, status)
            return None


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


def failure_message(exc: BaseException) -> str:
    """A one-sentence message for an unexpected failure (out-of-memory gets advice)."""
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory: try a smaller size, fewer frames, or start the studio "
                "with CPU offload.")
    return f"The run failed with {name}: {exc}".strip()
