"""Named API endpoints for gradio_client: generate (streaming), cancel, takes, projects.

The caller names its own owner key (16-128 letters, digits, '-' or '_'; keep it secret: it is
what separates one user's projects from another's). `generate` takes the form's field names as a
settings dict (see README "API") and streams one dict per update, in order:
started, step..., preview..., decoding, then done | failed | cancelled.

Every argument is checked before anything is decoded or stored, and every failure reaches the
client as one sentence (`studio.errors.user_errors`), never a traceback, path or SQL.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Iterator

import gradio as gr

import storage
from pipelines.errors import RequestError
from storage.validation import MAX_ID

from . import forms
from .errors import user_errors
from .handlers import Handlers
from .limits import MAX_DATA_URL_CHARS, MAX_IMAGE_BYTES, MiB
from .media_links import MediaKind
from .owners import check_owner_key
from .progress_view import animated_webp
from .runner import QueueFull

DATA_URL = re.compile(r"data:image/(png|jpeg|webp);base64,([A-Za-z0-9+/=\s]+)")
MAX_TAKES_PAGE = 100


def take_dict(handlers: Handlers, take: storage.TakeRecord) -> dict[str, Any]:
    """A take as JSON for API clients; media are signed, expiring URLs relative to the server
    (`/media/<take id>/<kind>?exp=..&sig=..`, see studio.media_links), never file paths.

    The final prompt is sent once, as `prompt`; `request` holds every other setting (and the
    user's own text and controls under "studio")."""
    def url(relative: str | None, kind: MediaKind) -> str | None:
        if not relative or take.media_missing:
            return None
        return handlers.signer.url(take.id, kind)

    request = {key: value for key, value in take.request.items() if key != "prompt"}
    request["image_path"] = None  # stored takes carry none; older rows may: it stays on the server
    return {"id": take.id, "project_id": take.project_id, "status": str(take.status),
            "prompt": take.prompt, "variant": take.variant, "seed": take.seed,
            "step": take.step, "total_steps": take.total_steps, "error": take.error,
            "favourite": take.favourite, "parent_id": take.parent_id,
            "parent_kind": take.parent_kind, "queued_at": take.queued_at.isoformat(),
            "finished_at": take.finished_at.isoformat() if take.finished_at else None,
            "video": url(take.video_path, "video"), "poster": url(take.poster_path, "poster"),
            "image": url(take.image_path, "image"), "request": request}


def image_from_data_url(handlers: Handlers, value: Any) -> str | None:
    """A data-URL start image, size-checked before decoding, in a scratch file (removed once the
    take has stored it, or at once if the request is refused)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError("image must be a data URL: data:image/png;base64,... (PNG, JPEG or WebP).",
                           "image")
    if len(value) > MAX_DATA_URL_CHARS:
        raise RequestError(f"image is larger than {MAX_IMAGE_BYTES // MiB} MiB; send a smaller one.",
                           "image")
    match = DATA_URL.fullmatch(value.strip())
    if match is None:
        raise RequestError("image must be a data URL: data:image/png;base64,... (PNG, JPEG or WebP).",
                           "image")
    try:
        data = base64.b64decode(match.group(2), validate=False)
    except (binascii.Error, ValueError):
        raise RequestError("image is not valid base64.", "image") from None
    if not data:
        raise RequestError("image is empty; send the file's bytes as base64.", "image")
    path = handlers.scratch.new_file("." + match.group(1))
    path.write_bytes(data)
    return str(path)


def _whole(value: Any, name: str, low: int, high: int) -> int:
    """A whole-number argument within [low, high], or a sentence saying what it must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise RequestError(f"{name} must be a whole number from {low} to {high}.", name)
    number = int(value)
    if not low <= number <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}.", name)
    return number


def _owner(value: Any) -> str:
    try:
        return check_owner_key(value)
    except ValueError as exc:
        raise RequestError(str(exc), "owner") from None


def register_api(handlers: Handlers, slot: str, concurrency: int) -> None:
    """Add the named endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""

    def generate(settings: dict, owner: str, project_id: int = 0) -> Iterator[dict]:
        """Generate a take from a settings dict; streams dicts: started, step, preview, decoding, done/failed/cancelled."""
        owner = _owner(owner)
        if not isinstance(settings, dict):
            raise RequestError("settings must be a JSON object of form fields, e.g. "
                               '{"variant": "ti2v-5b", "prompt": "..."}.', "settings")
        project_id = _whole(project_id, "project_id", 0, MAX_ID)
        unknown = sorted(str(k) for k in set(settings) - set(forms.FORM_FIELDS))
        if unknown:
            raise RequestError(f"Unknown settings: {', '.join(unknown)[:200]}; known: "
                               f"{', '.join(forms.FORM_FIELDS)}.", unknown[0])
        form = {name: settings.get(name) for name in forms.FORM_FIELDS}
        form["image"] = image_from_data_url(handlers, settings.get("image"))
        try:
            form_request = handlers.request(form)
            if project_id:
                with handlers.db.read_session() as s, s.begin():
                    if storage.get_project(s, owner, project_id) is None:
                        raise RequestError(f"No project {project_id} for this owner.", "project_id")
            project_id = handlers.project_for_write(owner, project_id)
        except BaseException:
            handlers.scratch.discard(form["image"])
            raise
        try:
            updates = handlers.runner.generate(owner, project_id, form_request.request,
                                               form_request.stored_dict())
            for update in updates:
                yield _update_dict(handlers, update, project_id, form_request.notices)
        except QueueFull as exc:
            raise gr.Error(str(exc)) from None

    def cancel(owner: str, take_id: int) -> dict:
        """Cancel a queued or running take of this owner; a running one stops within one step and is kept as cancelled."""
        owner = _owner(owner)
        take_id = _whole(take_id, "take_id", 1, MAX_ID)
        return {"take_id": take_id, "cancelled": handlers.runner.cancel(owner, take_id)}

    def takes(owner: str, project_id: int = 0, limit: int = 50, offset: int = 0) -> list[dict]:
        """List this owner's takes in a project (0: the default project), newest first, at most 100 at a time."""
        owner = _owner(owner)
        project_id = _whole(project_id, "project_id", 0, MAX_ID)
        limit = _whole(limit, "limit", 1, MAX_TAKES_PAGE)
        offset = _whole(offset, "offset", 0, MAX_ID)
        with handlers.db.read_session() as s, s.begin():
            if not project_id:
                project = storage.get_default_project(s, owner)  # reads make no rows
                if project is None:
                    return []
                project_id = project.id
            records = storage.list_takes(s, owner, project_id, limit=limit, offset=offset)
        return [take_dict(handlers, take) for take in records]

    def projects(owner: str) -> list[dict]:
        """List this owner's projects, newest first."""
        owner = _owner(owner)
        with handlers.db.read_session() as s, s.begin():
            records = storage.list_projects(s, owner, limit=200)
        return [{"id": p.id, "name": p.name, "take_count": p.take_count,
                 "created_at": p.created_at.isoformat()} for p in records]

    gr.api(user_errors(generate), api_name="generate", concurrency_limit=concurrency,
           concurrency_id=slot)
    # Not queued: they answer at once even while takes are generating.
    gr.api(user_errors(cancel), api_name="cancel", queue=False)
    gr.api(user_errors(takes), api_name="takes", queue=False)
    gr.api(user_errors(projects), api_name="projects", queue=False)


def _update_dict(handlers: Handlers, update: Any, project_id: int,
                 notices: tuple[str, ...]) -> dict[str, Any]:
    """One streamed update as the API sends it."""
    out: dict[str, Any] = {"event": update.kind, "take_id": update.take_id,
                           "step": update.step, "total": update.total,
                           "expert": update.expert, "elapsed_s": round(update.elapsed_s, 3),
                           "eta_s": None if update.eta_s is None else round(update.eta_s, 3),
                           "message": update.message}
    if update.kind == "started":
        out["project_id"] = project_id
        out["notices"] = list(notices)
    if update.preview is not None:
        out["preview"] = ("data:image/webp;base64,"
                          + base64.b64encode(animated_webp(update.preview)).decode("ascii"))
    if update.take is not None:
        out["take"] = take_dict(handlers, update.take)
        out["video"] = out["take"]["video"]
    return out
