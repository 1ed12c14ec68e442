"""Share links: the public `/share/<token>` page, its video and poster by token, and UI handlers.

Mounting (Gradio 6 passes `app_kwargs` to the FastAPI app it creates; routes given there are
matched before Gradio's own, and `demo.launch()` stays the entry point ZeroGPU hooks):

    demo.launch(app_kwargs={"routes": studio_share_routes(db)}, ...)   # studio.server does this

For the studio's handlers: `create_link(store, owner, take_id, include_image) -> token` and
`load_remix(store, token) -> (recipe, start image or None)` for `/?remix=<token>`. A visitor's
remix of someone else's take records no parent: lineage stays within one owner's takes.

Files are only ever found through the token's take record and the media store; nothing in a
request path is used as a file path. Unknown, revoked and malformed tokens get the same 404 page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from pipelines.errors import StudioError
from pipelines.recipe import Recipe
from pipelines.request import DEFAULT_NEGATIVE_PROMPT, GenerationRequest
from pipelines.variants import VARIANTS
from storage import StorageError, Store, TakeStatus
from storage.validation import is_token_shaped

from . import hosting
from .shots import shown_video

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"  # package data: found when installed too
CSS_PATH = "/share-static/share.css"
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
TITLE_CHARS, DESCRIPTION_CHARS = 70, 200

# No script ever runs on a share page; media and styles come from this origin only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; "
        "media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class ShareError(StudioError):
    """A share action could not be done; the message says why."""


@dataclass(frozen=True)
class SharedTake:
    """What a share page may show: one take's settings and files, nothing about its owner."""

    token: str
    request: GenerationRequest
    created_at: datetime
    video: Path
    poster: Path | None
    start_image: bool = False  # the take began from an image (never its path)
    image: Path | None = None  # that image, only when the owner chose to show it


Finder = Callable[[str], "SharedTake | None"]


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(STATIC_DIR), autoescape=True, auto_reload=False)


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut at a word boundary to at most `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,.;:") + "…"


def is_token(value: str) -> bool:
    """Whether `value` has the shape of a share token (storage's one rule)."""
    return is_token_shaped(value)


def share_url(base_url: str, token: str) -> str:
    """The absolute page URL for `token` under `base_url`."""
    return f"{base_url.rstrip('/')}/share/{token}"


def _settings(request: GenerationRequest, start_image: bool) -> list[tuple[str, str]]:
    seconds = request.frames / request.fps if request.fps else 0
    rows = [
        ("Seed", str(request.seed)),
        ("Size", f"{request.width} × {request.height}"),
        ("Frames", f"{request.frames} at {request.fps} fps ({seconds:.1f} s)"),
        ("Steps", str(request.steps)),
        ("Guidance", f"{request.guidance:g}"),
    ]
    if request.guidance_low is not None:
        rows.append(("Guidance, low-noise expert", f"{request.guidance_low:g}"))
    rows.append(("Flow shift", f"{request.flow_shift:g}"))
    if start_image:
        rows.append(("Start image", "yes"))
    return rows


def render_page(take: SharedTake, base_url: str) -> str:
    """The share page HTML for `take`, with absolute URLs under `base_url` (all text escaped)."""
    request = take.request
    page_url = share_url(base_url, take.token)
    spec = VARIANTS.get(request.variant)
    made = take.created_at if take.created_at.tzinfo else take.created_at.replace(tzinfo=timezone.utc)
    negative = request.negative_prompt if request.negative_prompt != DEFAULT_NEGATIVE_PROMPT else ""
    return _templates().get_template("share.html").render(
        title=f"{shorten(request.prompt, TITLE_CHARS) or 'Untitled take'} · Wan Studio",
        description=shorten(request.prompt, DESCRIPTION_CHARS),
        prompt=request.prompt,
        negative_prompt=negative,
        page_url=page_url,
        video_url=f"{page_url}/video.mp4",
        poster_url=f"{page_url}/poster" if take.poster is not None else None,
        image_url=f"{page_url}/image" if take.image is not None else None,
        css_url=f"{base_url.rstrip('/')}{CSS_PATH}",
        remix_url=f"{base_url.rstrip('/')}/?remix={take.token}",
        download_name=f"wan-studio-{request.variant}-{request.seed}.mp4",
        width=request.width,
        height=request.height,
        variant_label=spec.label if spec else request.variant,
        made_iso=made.astimezone(timezone.utc).isoformat(timespec="seconds"),
        made_text=made.astimezone(timezone.utc).strftime("%d %b %Y, %H:%M UTC"),
        settings=_settings(request, take.start_image),
    )


def render_missing(base_url: str) -> str:
    """The one 404 page for unknown, revoked and malformed links."""
    return _templates().get_template("share-missing.html").render(css_url=f"{base_url.rstrip('/')}{CSS_PATH}")


def serve_file(path: Path, media_type: str) -> Response:
    """A media file with HTTP Range support (seeking), our security headers and no caching."""
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)


def image_type(path: Path) -> str | None:
    """The content type of a poster or start image by its suffix; None for anything else."""
    return IMAGE_TYPES.get(path.suffix.lower())


def share_routes(find: Finder, base_url: Callable[[Request], str] | None = None) -> list[BaseRoute]:
    """Starlette routes for share pages; `find(token)` returns the take or None.

    The endpoints are coroutines that call `find` inline: a token lookup is one indexed SQLite
    read in WAL mode (readers never wait for the writer), and skipping the thread pool saves two
    thread hand-offs, each of which can wait out a GIL switch interval while a generation runs.
    """
    resolve_base = base_url or (lambda request: hosting.public_base_url(request))

    def lookup(request: Request) -> SharedTake | None:
        token = request.path_params["token"]
        try:
            return find(token) if is_token(token) else None
        except StorageError:  # the database failed: logged by storage; the visitor gets the 404
            return None

    async def missing(request: Request) -> Response:
        return HTMLResponse(render_missing(resolve_base(request)), status_code=404, headers=SECURITY_HEADERS)

    async def page(request: Request) -> Response:
        take = lookup(request)
        if take is None:
            return await missing(request)
        try:
            html = render_page(take, resolve_base(request))
        except (TypeError, ValueError):  # settings stored by an older or foreign client
            log.warning("Share link %s… names a take whose settings cannot be shown.", take.token[:6])
            return await missing(request)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    async def video(request: Request) -> Response:
        take = lookup(request)
        if take is None or not take.video.is_file():
            return await missing(request)
        return serve_file(take.video, "video/mp4")

    async def picture(request: Request, which: str) -> Response:
        take = lookup(request)
        path = getattr(take, which) if take is not None else None
        kind = image_type(path) if path else None
        if path is None or kind is None or not path.is_file():
            return await missing(request)
        return serve_file(path, kind)

    async def poster(request: Request) -> Response:
        return await picture(request, "poster")

    async def image(request: Request) -> Response:
        return await picture(request, "image")

    async def stylesheet(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "share.css", media_type="text/css", headers=SECURITY_HEADERS)

    methods = ["GET", "HEAD"]
    return [
        Route("/share/{token}", page, methods=methods),
        Route("/share/{token}/video.mp4", video, methods=methods),
        Route("/share/{token}/poster", poster, methods=methods),
        Route("/share/{token}/image", image, methods=methods),
        Route(CSS_PATH, stylesheet, methods=methods),
        Route("/share/{rest:path}", missing, methods=methods),  # every other /share/... path
    ]



def storage_finder(store: Store) -> Finder:
    """A finder over the studio's storage: live link, completed take whose video is on disk."""

    def find(token: str) -> SharedTake | None:
        shared = store.resolve_share(token)
        if shared is None:
            return None
        take, link = shared
        video = shown_video(store, take)  # an extension's link shares its whole shot
        if take.status != TakeStatus.COMPLETED or video is None or take.media_missing:
            return None  # a page whose video is gone answers 404, as its video does
        try:
            recipe = Recipe.from_dict(take.request)
        except (TypeError, ValueError):
            log.warning("Share link %s… names a take whose settings cannot be read.", token[:6])
            return None
        image = store.media_of(take, "image") if link.include_image else None
        made = take.finished_at or take.queued_at
        return SharedTake(token, recipe.request, made, video, store.media_of(take, "poster"),
                          bool(take.image_path), image)

    return find


def studio_share_routes(store: Store) -> list[BaseRoute]:
    """The share routes over the studio's storage (what `studio.server` mounts)."""
    return share_routes(storage_finder(store))


def create_link(store: Store, owner: str, take_id: int, include_image: bool = False) -> str:
    """Share one of `owner`'s finished takes; returns its token (the take's live link when it
    already has one: storage keeps one live link per take until it is revoked). The page shows
    the take's start image only when `include_image` (the latest choice holds)."""
    take = store.get_take(owner, take_id)
    if take is None:
        raise ShareError("That take is not in your projects, so it cannot be shared.")
    if take.status != TakeStatus.COMPLETED or take.video_path is None or take.media_missing:
        raise ShareError("Only a finished take with its video can be shared; wait for it to complete.")
    return store.share(owner, take_id, include_image=include_image).token


def load_remix(store: Store, token: str) -> tuple[Recipe, Path | None] | None:
    """A shared take's recipe for `/?remix=<token>`, with its start image when the owner chose to
    show it on the share page (the file in the media folder: the UI hands Gradio a view copy), or
    None for a link that does not work. The remix is saved in the visitor's own project."""
    if not is_token(token):
        return None
    shared = store.resolve_share(token)
    if shared is None or shared[0].status != TakeStatus.COMPLETED:
        return None
    take, link = shared
    try:
        recipe = Recipe.from_dict(take.request)
    except (TypeError, ValueError):
        return None
    return recipe, store.media_of(take, "image") if link.include_image else None
