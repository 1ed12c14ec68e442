"""Signed, expiring media URLs for API clients: `/media/<take id>/<kind>?exp=<unix s>&sig=<hex>`.

The signature is HMAC-SHA256 over "take id:kind:expiry" under a key derived from the server-only
secret (`studio.owners.StudioSecrets.server`, never the public browser-state one), so a URL opens
one file of one take until it expires and cannot be turned into another. The route finds the file through the take's stored record and the
media store; nothing in the request is used as a path. A bad, tampered or expired URL, a deleted
take and a missing file all get the same bare 404.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Literal

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

import storage

from .share import SECURITY_HEADERS, image_type, serve_file

MediaKind = Literal["video", "poster", "image", "end_image", "shot"]
KINDS: tuple[MediaKind, ...] = ("video", "poster", "image", "end_image", "shot")
DEFAULT_TTL_S = 6 * 3600
MAX_TAKE_ID = 2**63 - 1


class MediaSigner:
    """Makes and checks signed media URLs under one server secret."""

    def __init__(self, secret: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        if len(secret) < 32:
            raise ValueError("The server secret for media links must be at least 32 characters.")
        if ttl_s <= 0:
            raise ValueError("Media links need a positive lifetime in seconds.")
        # A key of its own, so a media signature never equals an owner-key HMAC (studio.hosting).
        self._key = hmac.new(secret.encode(), b"wan-studio media links v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _signature(self, take_id: int, kind: str, expires: int) -> str:
        message = f"{take_id}:{kind}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, take_id: int, kind: MediaKind, now: float | None = None) -> str:
        """The signed path (relative to the server's base URL) for one file of a take."""
        if kind not in KINDS:
            raise ValueError(f"Media kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        expires = int(time.time() if now is None else now) + self.ttl_s
        return f"/media/{int(take_id)}/{kind}?exp={expires}&sig={self._signature(take_id, kind, expires)}"

    def verify(self, take_id: int, kind: str, expires: str, signature: str,
               now: float | None = None) -> bool:
        """Whether the signature is ours for this take, kind and expiry, and not yet expired."""
        # ASCII digits only: str.isdigit() also accepts '²' and '¹', which int() refuses.
        if kind not in KINDS or not _ascii_digits(expires) or len(expires) > 12:
            return False
        if not signature.isascii():
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._signature(take_id, kind, int(expires)), signature)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def find_media(store: storage.Store, take_id: int, kind: str) -> Path | None:
    """The absolute file of a take's media kind, or None (no take, no such file, or unsafe path)."""
    take = store.find_take(take_id)  # the signature already proved the right to this take
    return store.media_of(take, kind) if take is not None else None


def media_routes(store: storage.Store, signer: MediaSigner) -> list[BaseRoute]:
    """The Starlette route serving signed media URLs (with HTTP Range, like the share video)."""

    async def missing() -> Response:
        return PlainTextResponse("Not found: this media link is wrong or has expired.",
                                 status_code=404, headers=SECURITY_HEADERS)

    async def media(request: Request) -> Response:
        raw_id, kind = request.path_params["take_id"], request.path_params["kind"]
        if not _ascii_digits(raw_id) or len(raw_id) > 19 or not 1 <= int(raw_id) <= MAX_TAKE_ID:
            return await missing()
        take_id = int(raw_id)
        if not signer.verify(take_id, kind, request.query_params.get("exp", ""),
                             request.query_params.get("sig", "")):
            return await missing()
        try:
            path = find_media(store, take_id, kind)
        except storage.StorageError:  # the database failed: the log says why, the link says 404
            return await missing()
        media_type = "video/mp4" if kind in ("video", "shot") else (image_type(path) if path else None)
        if path is None or media_type is None:
            return await missing()
        return serve_file(path, media_type)

    async def other(request: Request) -> Response:
        return await missing()

    methods = ["GET", "HEAD"]
    return [Route("/media/{take_id}/{kind}", media, methods=methods),
            Route("/media/{rest:path}", other, methods=methods)]
