"""Named API endpoints for gradio_client: generate (streaming), cancel, takes, projects.

The caller names its own owner key (16-128 letters, digits, '-' or '_'; keep it secret: it is
what separates one user's projects from another's). `generate` takes the form's field names as a
settings dict (see README "API") and streams one dict per update, in order:
queued, started, step..., preview..., decoding, then done | failed | cancelled.

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
from pipelines.events import DecodingEvent, StepEvent
from pipelines.recipe import Recipe
from storage.validation import MAX_ID

from . import forms
from .errors import user_errors
from .handlers import Handlers, Submitted
from .limits import MAX_DATA_URL_CHARS, MAX_IMAGE_BYTES, MiB
from .media_links import MediaKind
from .owners import check_owner_key
from .take_events import PreviewImage, TakeEvent, TakeFinished, TakeQueued, TakeStarted

DATA_URL = re.compile(r"data:image/(png|jpeg|webp);base64,([A-Za-z0-9+/=\s]+)")
MAX_TAKES_PAGE = 100
API_FIELDS = ("loras", "speed")  # structured where the page has one control per part


def take_dict(handlers: Handlers, take: storage.TakeRecord) -> dict[str, Any]:
    """A take as JSON for API clients; media are signed, expiring URLs relative to the server
    (`/media/<take id>/<kind>?exp=..&sig=..`, see studio.media_links), never file paths.

    The final prompt is sent once, as `prompt`; `recipe` holds everything else that made the take
    (the settings under "request", the user's own text, the controls, weights, profile)."""
    def url(kind: MediaKind) -> str | None:
        return handlers.signer.url(take.id, kind) if handlers.store.media_of(take, kind) else None

    recipe = Recipe.from_dict(take.request).to_dict()
    recipe["request"].pop("prompt", None)
    return {"id": take.id, "project_id": take.project_id, "status": str(take.status),
            "prompt": take.prompt, "variant": take.variant, "seed": take.seed,
            "step": take.step, "total_steps": take.total_steps, "error": take.error,
            "favourite": take.favourite, "parent_id": take.parent_id,
            "parent_kind": take.parent_kind, "queued_at": take.queued_at.isoformat(),
            "finished_at": take.finished_at.isoformat() if take.finished_at else None,
            "video": url("video"), "poster": url("poster"), "image": url("image"),
            "end_image": url("end_image"), "shot": url("shot"), "batch_id": take.batch_id,
            "recipe": recipe}


def image_from_data_url(handlers: Handlers, value: Any, name: str = "image") -> str | None:
    """A data-URL start (or end) image, size-checked before decoding, in a scratch file (removed
    once the take has stored it, or at once if the request is refused)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a data URL: data:image/png;base64,... (PNG, JPEG or WebP).",
                           name)
    if len(value) > MAX_DATA_URL_CHARS:
        raise RequestError(f"{name} is larger than {MAX_IMAGE_BYTES // MiB} MiB; send a smaller one.",
                           name)
    match = DATA_URL.fullmatch(value.strip())
    if match is None:
        raise RequestError(f"{name} must be a data URL: data:image/png;base64,... (PNG, JPEG or WebP).",
                           name)
    try:
        data = base64.b64decode(match.group(2), validate=False)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name} is not valid base64.", name) from None
    if not data:
        raise RequestError(f"{name} is empty; send the file's bytes as base64.", name)
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
        """Generate a take from a settings dict; streams dicts: queued, started, step, preview, decoding, then done/failed/cancelled."""
        owner = _owner(owner)
        if not isinstance(settings, dict):
            raise RequestError("settings must be a JSON object of form fields, e.g. "
                               '{"variant": "ti2v-5b", "prompt": "..."}.', "settings")
        project_id = _whole(project_id, "project_id", 0, MAX_ID)
        known = (*forms.FORM_FIELDS, *API_FIELDS)
        unknown = sorted(str(k) for k in set(settings) - set(known))
        if unknown:
            raise RequestError(f"Unknown settings: {', '.join(unknown)[:200]}; known: "
                               f"{', '.join(known)}.", unknown[0])
        form = {name: settings.get(name) for name in known}
        form["image"] = image_from_data_url(handlers, settings.get("image"))
        try:
            form["end_image"] = image_from_data_url(handlers, settings.get("end_image"), "end_image")
        except RequestError:
            handlers.scratch.discard(form["image"])
            raise
        if project_id and handlers.store.get_project(owner, project_id) is None:
            handlers.scratch.discard(form["image"])
            handlers.scratch.discard(form["end_image"])
            raise RequestError(f"No project {project_id} for this owner.", "project_id")
        submitted = handlers.submit(owner, project_id or None, None, form)
        current = submitted.take_id  # variations: the batch's takes stream one after another
        for event in handlers.watch(submitted.take_id):
            current = _about(event) or current
            yield render(handlers, event, submitted, current)

    def cancel(owner: str, take_id: int) -> dict:
        """Cancel a queued or running take of this owner; a queued one is cancelled at once, a running one stops within one step; both are kept as cancelled."""
        owner = _owner(owner)
        take_id = _whole(take_id, "take_id", 1, MAX_ID)
        return {"take_id": take_id, "cancelled": handlers.jobs.cancel(owner, take_id)}

    def takes(owner: str, project_id: int = 0, limit: int = 50, offset: int = 0) -> list[dict]:
        """List this owner's takes in a project (0: the default project), newest first, at most 100 at a time."""
        owner = _owner(owner)
        project_id = _whole(project_id, "project_id", 0, MAX_ID)
        limit = _whole(limit, "limit", 1, MAX_TAKES_PAGE)
        offset = _whole(offset, "offset", 0, MAX_ID)
        if not project_id:
            project = handlers.store.default_project(owner)  # reads make no rows
            if project is None:
                return []
            project_id = project.id
        records = handlers.store.list_takes(owner, project_id, limit=limit, offset=offset)
        return [take_dict(handlers, take) for take in records]

    def projects(owner: str) -> list[dict]:
        """List this owner's projects, newest first."""
        owner = _owner(owner)
        return [{"id": p.id, "name": p.name, "take_count": p.take_count,
                 "created_at": p.created_at.isoformat()} for p in handlers.store.list_projects(owner)]

    # Takes run in the workers, not in these calls: a generate call only waits on its take's
    # events, so many may stream at once.
    gr.api(user_errors(generate), api_name="generate", concurrency_limit=concurrency,
           concurrency_id=slot)
    gr.api(user_errors(cancel), api_name="cancel", queue=False)
    gr.api(user_errors(takes), api_name="takes", queue=False)
    gr.api(user_errors(projects), api_name="projects", queue=False)


def _about(event: TakeEvent) -> int | None:
    """The take an event names, if it names one (engine steps and previews do not)."""
    match event:
        case TakeQueued(take_id=take_id) | TakeStarted(take_id=take_id):
            return take_id
        case TakeFinished(take=take):
            return take.id
    return None


def render(handlers: Handlers, event: TakeEvent, submitted: Submitted,
           take_id: int | None = None) -> dict[str, Any]:
    """One take event as the API streams it: {"event", "take_id", ...} (`take_id`: the take it
    is about, when a batch of variations streams several)."""
    out: dict[str, Any] = {"take_id": take_id or submitted.take_id}
    match event:
        case TakeQueued(position=position):
            out |= {"event": "queued", "position": position, "project_id": submitted.project_id,
                    "notices": list(submitted.notices), "take_ids": list(submitted.take_ids)}
        case TakeStarted(total=total):
            out |= {"event": "started", "total": total}
        case StepEvent():
            out |= {"event": "step", "step": event.index, "total": event.total,
                    "expert": event.expert, "elapsed_s": round(event.elapsed_s, 3),
                    "eta_s": None if event.eta_s is None else round(event.eta_s, 3)}
        case PreviewImage():
            out |= {"event": "preview", "step": event.index, "total": event.total,
                    "expert": event.expert,
                    "preview": "data:image/webp;base64," + base64.b64encode(event.webp).decode()}
        case DecodingEvent():
            out |= {"event": "decoding", "total": event.total}
        case TakeFinished(take=take):
            kind = {"completed": "done"}.get(str(take.status), str(take.status))
            out |= {"event": kind, "message": event.message or take.error or "",
                    "take": take_dict(handlers, take)}
            out["video"] = out["take"]["video"]
    return out
