"""Take events from workers to watchers in this process: `TakeBus`.

A worker publishes each take's events; every watcher of that take gets them in order. Watchers
that read slowly never make the worker wait and never pile up stale frames: an unread preview or
step is replaced by a newer one of its kind. The bus remembers where each running take is (its
start, latest step and latest preview), so a watcher that joins late (a reloaded page) sees it at
once. Across processes (`app.py worker` on another GPU), `studio.shared_bus` carries the same
events over PostgreSQL and hands them to this bus on the web process's side.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from pipelines.events import DecodingEvent, StepEvent

from .take_events import PreviewImage, TakeEvent, TakeFinished, TakeStarted

_REPLACEABLE = (StepEvent, PreviewImage)
_REMEMBERED = (TakeStarted, StepEvent, PreviewImage, DecodingEvent)


class Watch:
    """One watcher's view of one take: `get(timeout)` returns the next event or None."""

    def __init__(self, bus: "TakeBus", take_id: int) -> None:
        self.take_id = take_id
        self._bus = bus
        self._events: deque[TakeEvent] = deque()
        self._ready = threading.Condition()
        self.closed = False

    def put(self, event: TakeEvent) -> None:
        """Queue an event, replacing an unread one of the same replaceable kind (and stage)."""
        with self._ready:
            if isinstance(event, _REPLACEABLE):
                stale = [e for e in self._events
                         if type(e) is type(event) and getattr(e, "expert", None) == event.expert]
                for old in stale:
                    self._events.remove(old)
            self._events.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> TakeEvent | None:
        """The next event, waiting up to `timeout` seconds (None when nothing came)."""
        with self._ready:
            if not self._events:
                self._ready.wait(timeout)
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        """Stop watching (the take itself goes on)."""
        self.closed = True
        self._bus._forget(self)


class TakeBus:
    """In-process fan-out of take events (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, set[Watch]] = {}
        self._latest: dict[int, dict[type, TakeEvent]] = {}
        self._listeners: list[Callable[[int, TakeEvent], None]] = []

    def publish(self, take_id: int, event: TakeEvent) -> None:
        """Hand `event` to every watcher of the take (and to listeners, e.g. a shared bus)."""
        with self._lock:
            if isinstance(event, TakeFinished):
                self._latest.pop(take_id, None)
            elif isinstance(event, _REMEMBERED):
                latest = self._latest.setdefault(take_id, {})
                if isinstance(event, TakeStarted):
                    latest.clear()
                latest[type(event)] = event
            watches = list(self._watches.get(take_id, ()))
            listeners = list(self._listeners)
        for watch in watches:
            watch.put(event)
        for listener in listeners:
            listener(take_id, event)

    def watch(self, take_id: int) -> Watch:
        """Start watching a take; what is known of it already comes first."""
        watch = Watch(self, take_id)
        with self._lock:
            self._watches.setdefault(take_id, set()).add(watch)
            known = list(self._latest.get(take_id, {}).values())
        for order in _REMEMBERED:
            for event in known:
                if isinstance(event, order):
                    watch.put(event)
        return watch

    def listen(self, listener: Callable[[int, TakeEvent], None]) -> None:
        """Also call `listener(take_id, event)` for every event published here."""
        with self._lock:
            self._listeners.append(listener)

    def watched(self) -> list[int]:
        """Takes with at least one watcher."""
        with self._lock:
            return [take_id for take_id, watches in self._watches.items() if watches]

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.take_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.take_id]
