"""Take events across processes, over PostgreSQL: `shared_bus(store)`.

With PostgreSQL, workers may run in other processes (`app.py worker`, one per GPU, on any
machine sharing the data folder). A worker's events still reach this process's watchers:

- publishing sends a small JSON `NOTIFY` on one channel; a preview's image goes into the data
  folder's `previews/t<take id>.webp`, overwritten each time, and the notification names it;
- a listener thread in each web process holds a `LISTEN` connection and hands what other
  processes published to its local `TakeBus` (a finished take is read back from the database).

A notification missed while the database restarts costs nothing lasting: the listener
reconnects, and a watch that hears nothing for a while reads the take's row itself
(`studio.jobs`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import storage
from pipelines.events import DecodingEvent, StepEvent

from .bus import TakeBus
from .take_events import PreviewImage, TakeEvent, TakeFinished, TakeStarted

log = logging.getLogger(__name__)

CHANNEL = "wan_studio_takes"
PREVIEWS_DIRNAME = "previews"


class SharedTakeBus(TakeBus):
    """A TakeBus that also carries events to and from other processes (module docstring)."""

    def __init__(self, store: storage.Store, listen: bool = True) -> None:
        super().__init__()
        self.store = store
        self.origin = secrets.token_hex(4)  # our own notifications come back to us: skip them
        self.previews = Path(store.db.data_dir) / PREVIEWS_DIRNAME
        self.previews.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        if listen:
            self._listener = threading.Thread(target=self._listen, name="take-bus-listen",
                                              daemon=True)
            self._listener.start()

    def publish(self, take_id: int, event: TakeEvent) -> None:
        """Hand the event to this process's watchers, then tell the other processes."""
        super().publish(take_id, event)
        try:
            payload = self._payload(take_id, event)
            if payload is not None:
                with self.store.db.engine.begin() as connection:
                    connection.exec_driver_sql("SELECT pg_notify(%(channel)s, %(payload)s)",
                                               {"channel": CHANNEL, "payload": payload})
        except Exception as exc:  # noqa: BLE001 - other processes' watchers fall back to polling
            log.warning("take %s: event not sent to other processes: %s", take_id, exc)

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)

    # -- wire format -------------------------------------------------------------------------------

    def _payload(self, take_id: int, event: TakeEvent) -> str | None:
        data: dict[str, Any] = {"origin": self.origin, "take": take_id}
        match event:
            case TakeStarted():
                data |= {"kind": "started", "total": event.total}
            case StepEvent():
                data |= {"kind": "step", "index": event.index, "total": event.total,
                         "expert": event.expert, "timestep": event.timestep,
                         "elapsed_s": event.elapsed_s, "eta_s": event.eta_s}
            case PreviewImage():
                path = self.previews / f"t{int(take_id)}.webp"
                partial = path.with_name(f".{path.name}.{self.origin}")
                partial.write_bytes(event.webp)
                os.replace(partial, path)  # a reader never sees half an image
                data |= {"kind": "preview", "index": event.index, "total": event.total,
                         "expert": event.expert}
            case DecodingEvent():
                data |= {"kind": "decoding", "total": event.total}
            case TakeFinished():
                data |= {"kind": "finished", "message": event.message,
                         "elapsed_s": event.elapsed_s}
                (self.previews / f"t{int(take_id)}.webp").unlink(missing_ok=True)
            case _:
                return None
        return json.dumps(data)

    def _event(self, data: dict[str, Any]) -> TakeEvent | None:
        take_id = int(data["take"])
        match data.get("kind"):
            case "started":
                return TakeStarted(take_id, int(data["total"]))
            case "step":
                return StepEvent(int(data["index"]), int(data["total"]), data["expert"],
                                 float(data["timestep"]), float(data["elapsed_s"]),
                                 None if data["eta_s"] is None else float(data["eta_s"]))
            case "preview":
                try:
                    webp = (self.previews / f"t{take_id}.webp").read_bytes()
                except OSError:
                    return None  # already replaced or gone: a newer one is on its way
                return PreviewImage(int(data["index"]), int(data["total"]), data["expert"], webp)
            case "decoding":
                return DecodingEvent(int(data["total"]))
            case "finished":
                take = self.store.find_take(take_id)
                return None if take is None else TakeFinished(take, data.get("message") or "",
                                                              data.get("elapsed_s"))
        return None

    # -- listening ---------------------------------------------------------------------------------

    def _listen(self) -> None:
        """Hold a LISTEN connection (reconnecting after a database restart) and pass what other
        processes publish to this process's watchers."""
        import psycopg

        url = self.store.db.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    while not self._stop.is_set():
                        for note in connection.notifies(timeout=1.0):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                log.warning("take events from other processes paused (%s); reconnecting",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _deliver(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            if data.get("origin") == self.origin:
                return
            event = self._event(data)
        except (ValueError, KeyError, TypeError, storage.StorageError) as exc:
            log.warning("a take event from another process could not be read: %s", exc)
            return
        if event is not None:
            TakeBus.publish(self, int(data["take"]), event)


def shared_bus(store: storage.Store, listen: bool = True) -> SharedTakeBus:
    """The bus for a studio or worker on a shared (PostgreSQL) database."""
    return SharedTakeBus(store, listen=listen)
