"""What one visitor may ask of a shared studio: request size, queued takes, work per take.

- `BodyLimit`: an ASGI middleware refusing request bodies over a cap with 413 and a sentence,
  before anything is parsed or decoded (the JSON of `/generate` carries data-URL images).
- `Limits`: how many takes an owner may have queued or running, and how much work one take may be
  (width x height x frames x steps), per variant and device, read from the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest
from pipelines.variants import VARIANTS, get_variant

MiB = 1024 * 1024
MAX_IMAGE_BYTES = 20 * MiB  # an uploaded or data-URL start image, decoded
# base64 grows bytes by 4/3; the rest of a /generate body is a few KiB of settings
MAX_DATA_URL_CHARS = 4 * -(-MAX_IMAGE_BYTES // 3) + 64
MAX_BODY_BYTES = MAX_DATA_URL_CHARS + 2 * MiB
MAX_IMPORT_BYTES = 512 * MiB  # a project export uploaded to import (Gradio's file route)
UPLOAD_PATH = "/gradio_api/upload"  # where Gradio receives files; other bodies are JSON

QUEUE_ENV = "WAN_STUDIO_MAX_QUEUED"
ZERO_GPU_MAX_ENV = "WAN_STUDIO_ZEROGPU_MAX_S"
ZERO_GPU_MAX_S = 300  # the longest duration ZeroGPU grants one call (for signed-in visitors)
ZERO_GPU_ANONYMOUS_S = 120  # a visitor who is not signed in gets this much GPU time a day
WORK_SCALE_ENV = "WAN_STUDIO_WORK_LIMIT"
DEFAULT_MAX_QUEUED = 3
# Work a take may be, in width x height x frames x steps. On a GPU: twice the official default
# run of the variant (a 720p 81-frame 40-step A14B take is 3.0e9). On a CPU only the demo weights
# are worth running: a 128x128, 49-frame, 40-step take (23 times the demo's default) takes a minute.
_GPU_WORK_FACTOR = 2.0
_CPU_WORK = 128 * 128 * 49 * 40


def _official_work(variant_id: str) -> float:
    spec = get_variant(variant_id)
    width, height = spec.default_size
    return float(width * height * spec.frames * spec.steps)


WORK_LIMITS: dict[str, dict[str, float]] = {
    variant_id: {"cuda": _GPU_WORK_FACTOR * _official_work(variant_id), "cpu": float(_CPU_WORK)}
    for variant_id in VARIANTS
}


def work(request: GenerationRequest) -> int:
    """The work of one take: width x height x frames x steps."""
    return request.width * request.height * request.frames * request.steps


@dataclass(frozen=True)
class Limits:
    """Per-owner queue length and per-take work caps (scale 0 turns the work cap off)."""

    max_queued: int = DEFAULT_MAX_QUEUED
    work_scale: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        """Read WAN_STUDIO_MAX_QUEUED (takes per owner) and WAN_STUDIO_WORK_LIMIT (a multiplier of
        the work caps; 0 turns them off), refusing values that are not numbers."""
        env = os.environ if env is None else env
        try:
            max_queued = int(env.get(QUEUE_ENV, DEFAULT_MAX_QUEUED))
            scale = float(env.get(WORK_SCALE_ENV, 1.0))
        except ValueError:
            raise ValueError(f"{QUEUE_ENV} must be a whole number and {WORK_SCALE_ENV} a number "
                             "(0 turns the work cap off).") from None
        if max_queued < 1 or scale < 0:
            raise ValueError(f"{QUEUE_ENV} must be at least 1 and {WORK_SCALE_ENV} at least 0.")
        return cls(max_queued, scale)

    def check_work(self, request: GenerationRequest, device: str) -> None:
        """Refuse a take bigger than this studio runs on `device`, saying the limit."""
        if self.work_scale == 0:
            return
        kind = "cuda" if device.startswith("cuda") else "cpu"
        limit = WORK_LIMITS[request.variant][kind] * self.work_scale
        if work(request) > limit:
            raise RequestError(
                f"This take is too big for this studio: {request.width}x{request.height}, "
                f"{request.frames} frames and {request.steps} steps is {work(request) / 1e6:,.0f} "
                f"million pixel-steps, and {request.variant} on {kind.upper()} here takes at most "
                f"{limit / 1e6:,.0f} million; lower the size, frames or steps.", "steps")

    def check_zero_gpu(self, request: GenerationRequest, signed_in: bool,
                       env: Mapping[str, str] | None = None) -> None:
        """On ZeroGPU, refuse before queueing a take whose GPU time estimate is over what one
        call may ask for, or over an anonymous visitor's whole daily quota, saying what to lower.
        (A signed-in visitor's remaining quota is not readable: ZeroGPU refuses that call itself.)"""
        from .hosting import estimate_gpu_seconds, on_zero_gpu

        env = os.environ if env is None else env
        if not on_zero_gpu(env):
            return
        try:
            longest = int(env.get(ZERO_GPU_MAX_ENV, ZERO_GPU_MAX_S))
        except ValueError:
            raise ValueError(f"{ZERO_GPU_MAX_ENV} must be a whole number of seconds.") from None
        needed = estimate_gpu_seconds(request)
        lower = ("lower the size, frames or steps, or pick a fast preset (4 steps, guidance 1)")
        if needed > longest:
            raise RequestError(f"This take needs about {needed} s of GPU, and this Space allows "
                               f"{longest} s per take: {lower}.", "steps")
        if not signed_in and needed > ZERO_GPU_ANONYMOUS_S:
            raise RequestError(f"This take needs about {needed} s of GPU, more than a visitor who is "
                               f"not signed in gets in a day ({ZERO_GPU_ANONYMOUS_S} s): sign in "
                               f"with Hugging Face, or {lower}.", "steps")

    def queue_full_message(self) -> str:
        """What an owner with too many takes waiting is told."""
        takes = "take" if self.max_queued == 1 else "takes"
        return (f"You already have {self.max_queued} {takes} queued or running, the most this "
                "studio allows; wait for one to finish or cancel one.")


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: HTTP request bodies over the cap get 413 and a sentence, unread. File
    uploads (a project export to import) may be larger than the JSON of any other request."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES,
                 max_upload_bytes: int = MAX_IMPORT_BYTES) -> None:
        self.app = app
        self.json_bytes = max_bytes
        self.upload_bytes = max_upload_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = str(scope.get("path", "")).endswith(UPLOAD_PATH)
        limit = self.upload_bytes if upload else self.json_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > limit:
                await self._refuse(send, limit)
                return
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        # No length declared (chunked): read up to the cap first, then hand the body on.
        messages: list[dict[str, Any]] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await self._refuse(send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps({"error": f"The request is larger than {limit // MiB} MiB, the "
                                    "most this studio takes: send a smaller image (at most "
                                    f"{MAX_IMAGE_BYTES // MiB} MiB) or a smaller project "
                                    "export."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
