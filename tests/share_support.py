"""Helpers for the share and security tests: finished takes with real MP4s in real storage."""

from __future__ import annotations

import socket
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from pipelines.request import DEFAULT_NEGATIVE_PROMPT, GenerationRequest
from pipelines.video import write_mp4, write_poster
from storage import (
    Database,
    TakeRecord,
    add_take,
    create_share_link,
    finish_take,
    get_or_create_default_project,
    start_take,
)


def tiny_request(prompt: str, seed: int = 7) -> GenerationRequest:
    """A small, valid TI2V-5B request."""
    return GenerationRequest(variant="ti2v-5b", prompt=prompt, negative_prompt=DEFAULT_NEGATIVE_PROMPT,
                             width=64, height=48, frames=9, fps=24, steps=4, seed=seed, guidance=5.0,
                             guidance_low=None, flow_shift=5.0)


def finished_take(db: Database, owner: str, prompt: str, work: Path, seed: int = 7,
                  image: bytes | None = None) -> TakeRecord:
    """A completed take of `owner` with a real H.264 MP4 and a JPEG poster (and a start image)."""
    request = tiny_request(prompt, seed)
    ramp = np.linspace(0, 255, request.width, dtype=np.float32)
    frames = np.stack([np.stack([np.broadcast_to((ramp + 20 * t + seed) % 256, (request.height, request.width))] * 3,
                                axis=-1) for t in range(request.frames)]).astype(np.uint8)
    work.mkdir(parents=True, exist_ok=True)
    video = write_mp4(frames, work / f"take-{seed}.mp4", request.fps, request.to_dict())
    poster = write_poster(frames[0], work / f"take-{seed}.jpg")
    with db.session() as session, session.begin():
        project = get_or_create_default_project(session, owner)
        take = add_take(session, owner, project.id, request.to_dict(), image=image)
        start_take(session, owner, take.id)
        return finish_take(session, owner, take.id, "completed", video=video, poster=poster)


def share(db: Database, owner: str, take_id: int) -> str:
    """A new share token for one of `owner`'s takes."""
    with db.session() as session, session.begin():
        return create_share_link(session, owner, take_id).token


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PageParser(HTMLParser):
    """Collects meta tags, elements by id (with attributes and text) and script tags of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.by_id: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.scripts = 0
        self.title = ""
        self._open: list[str] = []
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "meta" and ("property" in values or "name" in values):
            self.meta[values.get("property") or values["name"]] = values.get("content", "")
        if tag == "script":
            self.scripts += 1
        if tag == "title":
            self._in_title = True
        if "id" in values:
            self.by_id[values["id"]] = {"tag": tag, **values}
            self.text[values["id"]] = ""
            self._open.append(values["id"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._open and self.by_id[self._open[-1]]["tag"] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        for element in self._open:
            self.text[element] += data
