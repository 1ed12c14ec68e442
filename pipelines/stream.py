"""The engine as one stream of typed events: `event_stream(engine)(request, cancel)`.

The generator yields StepEvent, PreviewEvent and DecodingEvent as the run goes, and always ends
with exactly one DoneEvent, FailedEvent or CancelledEvent (given `latents` a failed decode kept,
it decodes them instead of denoising); it never raises for a failed or
cancelled run. Closing it early cancels the run at its next step. The engine waits at each event
until the consumer asks for the next one, so it never runs ahead of what has been shown and
recorded. A plain function of (request, cancel), so ZeroGPU's `spaces.GPU` can wrap it and
stream its events back from the GPU worker by `yield`.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterator

from .events import CancelledEvent, DoneEvent, Event, FailedEvent
from .request import GenerationRequest

log = logging.getLogger(__name__)

FINAL_EVENTS = (DoneEvent, FailedEvent, CancelledEvent)
EventStream = Callable[..., Iterator[Event]]


def event_stream(engine: Any) -> EventStream:
    """A generator function over `engine.generate`'s events (see module docstring)."""

    def events(request: GenerationRequest, cancel: threading.Event | None = None,
               latents: Any = None) -> Iterator[Event]:
        stop = cancel or threading.Event()
        out: "queue.Queue[Any]" = queue.Queue()
        taken = threading.Semaphore(0)  # one release per event the consumer is done with
        closing = threading.Event()
        end = object()

        def emit(event: Event) -> None:
            out.put(event)
            if not closing.is_set():
                taken.acquire()

        def work() -> None:
            try:
                if latents is not None:  # a failed decode's latents: decode them, no denoising
                    engine.decode_again(request, latents, emit)
                else:
                    engine.generate(request, emit, stop)
            except BaseException as exc:  # noqa: BLE001 - the final event carries the outcome
                log.debug("the engine run for %s ended with %s", request.variant, type(exc).__name__)
            finally:
                out.put(end)

        thread = threading.Thread(target=work, name="engine", daemon=True)
        thread.start()
        last: Any = None
        final = False
        try:
            while (last := out.get()) is not end:
                final = final or isinstance(last, FINAL_EVENTS)
                yield last
                taken.release()
            if not final:  # the engine stopped without saying how: say it for it
                yield FailedEvent("The run ended without a result; try again.")
        finally:
            if last is not end and not isinstance(last, FINAL_EVENTS):
                stop.set()  # closed early: the run stops at its next step
            closing.set()
            taken.release()  # free the engine if it waits on the event it sent last
            thread.join()

    return events
