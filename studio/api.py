"""Named API endpoints for gradio_client: generate (streaming), cancel, takes, projects.

The caller names its own owner key (16-128 letters, digits, '-' or '_'; keep it secret: it is
what separates one user's projects from another's). `generate` takes the form's field names as a
settings dict (see README "API") and streams one dict per update, in order:
started, step..., preview..., decoding, then done | failed | cancelled.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Iterator

import gradio as gr

import storage
from pipelines.errors import RequestError

from . import forms
from .owners import check_owner_key
from .progress_view import animated_webp
from .handlers import Handlers
from .media_links import MediaKind

DATA_URL = re.compile(r"data:image/(png|jpeg|webp);base64,(.+)", re.DOTALL)


def take_dict(handlers: Handlers, take: storage.TakeRecord) -> dict[str, Any]:
    """A take as JSON for API clients; media are signed, expiring URLs relative to the server
    (`/media/<take id>/<kind>?exp=..&sig=..`, see studio.media_links), never file paths."""
    def url(relative: str | None, kind: MediaKind) -> str | None:
        if not relative or take.media_missing:
            return None
        return handlers.signer.url(take.id, kind)

    return {"id": take.id, "project_id": take.project_id, "status": str(take.status),
            "prompt": take.prompt, "variant": take.variant, "seed": take.seed,
            "step": take.step, "total_steps": take.total_steps, "error": take.error,
            "favourite": take.favourite, "parent_id": take.parent_id,
            "parent_kind": take.parent_kind, "queued_at": take.queued_at.isoformat(),
            "finished_at": take.finished_at.isoformat() if take.finished_at else None,
            "video": url(take.video_path, "video"), "poster": url(take.poster_path, "poster"),
            "image": url(take.image_path, "image"),
            # the start image's upload path stays on the server; "image" is its URL
            "request": {**take.request, "image_path": None}}


def _image_file(handlers: Handlers, value: Any) -> str | None:
    """Decode a data-URL start image into a scratch file."""
    if not value:
        return None
    match = DATA_URL.fullmatch(str(value).strip())
    if match is None:
        raise RequestError("image must be a data URL: data:image/png;base64,... (PNG, JPEG or WebP).",
                           "image")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image is not valid base64.", "image") from None
    path = handlers.scratch / f"api-{len(data)}-{abs(hash(data))}.{match.group(1)}"
    path.write_bytes(data)
    return str(path)


def register_api(handlers: Handlers, slot: str) -> None:
    """Add the named endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""

    def generate(settings: dict, owner: str, project_id: int = 0) -> Iterator[dict]:
        """Generate a take from a settings dict; streams dicts: started, step, preview, decoding, done/failed/cancelled."""
        try:
            owner = check_owner_key(owner)
            form = {name: settings.get(name) for name in forms.FORM_FIELDS}
            unknown = sorted(set(settings) - set(forms.FORM_FIELDS) - {"image"})
            if unknown:
                raise RequestError(f"Unknown settings: {', '.join(unknown)}; known: "
                                   f"{', '.join(forms.FORM_FIELDS)}.", unknown[0])
            form["image"] = _image_file(handlers, settings.get("image"))
            form_request = handlers.request(form)
            if project_id:
                with handlers.db.read_session() as s, s.begin():
                    project = storage.get_project(s, owner, project_id)
            else:  # may create the owner's first project
                with handlers.db.session() as s, s.begin():
                    project = storage.get_or_create_default_project(s, owner)
            if project is None:
                raise RequestError(f"No project {project_id} for this owner.", "project_id")
        except (RequestError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        for update in handlers.runner.generate(owner, project.id, form_request.request,
                                               form_request.stored_dict()):
            out: dict[str, Any] = {"event": update.kind, "take_id": update.take_id,
                                   "step": update.step, "total": update.total,
                                   "expert": update.expert, "elapsed_s": round(update.elapsed_s, 3),
                                   "eta_s": None if update.eta_s is None else round(update.eta_s, 3),
                                   "message": update.message}
            if update.kind == "started":
                out["project_id"] = project.id
                out["notices"] = list(form_request.notices)
            if update.preview is not None:
                out["preview"] = ("data:image/webp;base64,"
                                  + base64.b64encode(animated_webp(update.preview)).decode("ascii"))
            if update.take is not None:
                out["take"] = take_dict(handlers, update.take)
                out["video"] = out["take"]["video"]
            yield out

    def cancel(owner: str, take_id: int) -> dict:
        """Cancel a running take of this owner; it stops within one step and is kept as cancelled."""
        try:
            owner = check_owner_key(owner)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return {"take_id": take_id, "cancelled": handlers.runner.cancel(owner, int(take_id))}

    def takes(owner: str, project_id: int = 0, limit: int = 50, offset: int = 0) -> list[dict]:
        """List this owner's takes in a project (0: the default project), newest first."""
        try:
            owner = check_owner_key(owner)
            if not project_id:
                with handlers.db.session() as s, s.begin():
                    project_id = storage.get_or_create_default_project(s, owner).id
            with handlers.db.read_session() as s, s.begin():
                records = storage.list_takes(s, owner, project_id, limit=limit, offset=offset)
        except (ValueError, storage.StorageError) as exc:
            raise gr.Error(str(exc)) from None
        return [take_dict(handlers, take) for take in records]

    def projects(owner: str) -> list[dict]:
        """List this owner's projects, newest first."""
        try:
            owner = check_owner_key(owner)
            with handlers.db.read_session() as s, s.begin():
                records = storage.list_projects(s, owner, limit=200)
        except (ValueError, storage.StorageError) as exc:
            raise gr.Error(str(exc)) from None
        return [{"id": p.id, "name": p.name, "take_count": p.take_count,
                 "created_at": p.created_at.isoformat()} for p in records]

    gr.api(generate, api_name="generate", concurrency_limit=1, concurrency_id=slot)
    # Not queued: they answer at once even while the generation slot is busy.
    gr.api(cancel, api_name="cancel", queue=False)
    gr.api(takes, api_name="takes", queue=False)
    gr.api(projects, api_name="projects", queue=False)
