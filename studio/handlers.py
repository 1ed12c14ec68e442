"""UI event handlers: plain methods over storage, the model manager and the runner.

They take and return widget values (and gr.update objects), so tests call them
directly without a browser. Form widgets always arrive in `forms.FORM_FIELDS` order.
"""

from __future__ import annotations

import html
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

import storage
from pipelines.errors import RequestError
from pipelines.request import MAX_SEED, VariantDefaults
from pipelines.variants import VARIANTS, get_variant

from . import forms, hosting
from .limits import Limits
from .media_links import MediaSigner
from .owners import StudioSecrets, ensure_owner_key, legacy_account_owner_key
from .progress_view import empty_preview_html, message_html, preview_html, progress_html
from .runner import JobUpdate, QueueFull, Runner
from .scratch import ScratchSpace
from .views import ViewCopies

log = logging.getLogger(__name__)

STATUS_ICONS = {"pending": "⏳", "running": "▶", "completed": "✔", "failed": "✖",
                "cancelled": "■", "interrupted": "⚠"}
HISTORY_LIMIT = 60


@dataclass(frozen=True)
class HistoryView:
    """Gallery items (image, caption) and the take id behind each one."""

    items: list[tuple[str, str]]
    take_ids: list[int]


def no_weights_message() -> str:
    """What to do when no variant has weights."""
    return ("No weights are configured: start the studio with "
            "`python app.py serve --weights t2v-a14b=/path/to/folder-or-hub-id` "
            "(repeat --weights for i2v-a14b and ti2v-5b).")


def caption(take: storage.TakeRecord) -> str:
    """Gallery caption: status, time and the start of the prompt."""
    when = take.queued_at.strftime("%H:%M") if isinstance(take.queued_at, datetime) else ""
    star = "★ " if take.favourite else ""
    prompt = take.prompt if len(take.prompt) <= 70 else take.prompt[:69] + "…"
    return f"{star}{STATUS_ICONS.get(str(take.status), '')} {take.status} · {when} · {prompt}"


class Handlers:
    """The studio's event handlers, bound to one database, model manager and runner."""

    def __init__(self, db: storage.Database, manager: Any, runner: Runner,
                 placeholders: dict[str, str], secrets: StudioSecrets, scratch: ScratchSpace,
                 limits: Limits | None = None) -> None:
        self.db = db
        self.manager = manager
        self.runner = runner
        self.placeholders = placeholders
        self.secrets = secrets  # the server one signs media URLs and derives signed-in owner keys
        self.signer = MediaSigner(secrets.server)
        self.scratch = scratch
        self.views = ViewCopies(scratch.views)
        self.limits = limits or Limits()

    # -- variants and defaults -------------------------------------------------------------

    def defaults(self, variant_id: str) -> VariantDefaults:
        """The defaults a variant's form starts from (weights folder's studio.json, else official)."""
        return self.manager.defaults_for(variant_id)

    def initial_variant(self) -> str:
        """The variant the form opens with: the first one that has weights."""
        available = self.manager.available()
        return available[0] if available else next(iter(VARIANTS))

    def weights_note(self) -> str:
        """A banner about the weights in use (none, demo, or real)."""
        available = self.manager.available()
        if not available:
            return message_html(no_weights_message(), "error")
        demo = [v for v in available if self.manager.is_demo(v)]
        if demo:
            return message_html(f"Demo weights for {', '.join(demo)}: tiny models trained here, "
                                "64x64 clips; pass --weights for the real Wan2.2 models.", "notice")
        return ""

    def variant_choices(self) -> list[tuple[str, str]]:
        """Variant dropdown choices; variants without weights say so."""
        available = set(self.manager.available())
        return [(spec.label + ("" if spec.id in available else " — no weights"), spec.id)
                for spec in VARIANTS.values()]

    def switch_variant(self, variant_id: str) -> tuple[Any, ...]:
        """Reset settings to the variant's defaults; show only the inputs it takes."""
        spec = get_variant(variant_id)
        defaults = self.defaults(variant_id)
        values = forms.form_for_variant(variant_id, defaults)
        image_label = "Start image (required)" if spec.image_input == "required" else \
            "Start image (optional: animates it)"
        return (
            gr.update(visible=spec.takes_image, label=image_label,
                      value=None),
            gr.update(choices=forms.size_presets(variant_id, defaults), value=values["size_preset"]),
            values["width"],
            values["height"],
            gr.update(choices=forms.frame_presets(defaults), value=values["frames"]),
            values["frames"],
            values["steps"],
            values["guidance"],
            gr.update(visible=spec.experts == 2, value=values["guidance_low"]),
            values["flow_shift"],
        )

    @staticmethod
    def apply_size_preset(label: str) -> tuple[Any, Any]:
        """Fill width and height from a "WxH" preset (custom leaves them)."""
        size = forms.parse_size(label)
        if size is None:
            return gr.skip(), gr.skip()
        return size

    @staticmethod
    def size_label(width: Any, height: Any, current: str) -> Any:
        """Switch the size preset to "custom" once width or height no longer match it."""
        return gr.skip() if forms.parse_size(current) == (width, height) else forms.CUSTOM

    @staticmethod
    def random_seed() -> int:
        """A new random seed."""
        return random.SystemRandom().randint(0, MAX_SEED)

    @staticmethod
    def compose(*values: Any) -> str:
        """The live final prompt for the current form (or the problem with a control)."""
        try:
            return forms.final_prompt(forms.form_dict(values))
        except RequestError as exc:
            return str(exc)

    # -- owner, projects, history -----------------------------------------------------------

    def load(self, browser_key: str | None,
             profile: gr.OAuthProfile | None = None) -> tuple[Any, ...]:
        """Page load: make sure the browser has its key, pick the owner (the Hugging Face account
        when signed in, else the browser), then show that owner's projects and history.

        Returns (browser key, owner key, project dropdown, gallery, gallery ids, project id); the
        owner key stays in server-side session state, which every other handler reads. Nothing is
        written for a newcomer: their first project is made with their first take or project.
        """
        browser_key = ensure_owner_key(browser_key)
        owner = hosting.owner_key(profile, browser_key, self.secrets.server)
        username = hosting.signed_in_username(profile)
        if username:
            self._adopt_legacy_account(username, owner)
        with self.db.read_session() as s, s.begin():
            project = storage.get_default_project(s, owner)
        project_id = project.id if project else None
        view = self.history(owner, project_id)
        return (browser_key, owner, self._project_dropdown(owner, project_id), view.items,
                view.take_ids, project_id)

    def _adopt_legacy_account(self, username: str, owner: str) -> None:
        """Move an account's projects from its old key (derived from the public browser-state
        secret, so anyone could compute it) to its key under the server secret."""
        legacy = legacy_account_owner_key(username, self.secrets.browser_state)
        with self.db.session() as s, s.begin():
            moved = storage.move_owner(s, legacy, owner)
        if moved:
            log.info("moved %d project(s) of a signed-in account to its new owner key", moved)

    def sign_in_note(self, profile: gr.OAuthProfile | None = None) -> str:
        """Who the projects belong to when sign-in is on (empty off a Space)."""
        if not hosting.sign_in_enabled():
            return ""
        if profile is None:
            return message_html("Projects are kept for this browser; sign in to keep them with "
                                "your Hugging Face account on every browser.", "notice")
        return message_html(f"Signed in as {profile.username}: your projects follow your "
                            "account.", "notice")

    def history_note(self) -> str:
        """A warning when this Space loses its history on restart (else empty)."""
        note = hosting.history_note(self.db.data_dir)
        return message_html(note, "notice") if note else ""

    def _project_dropdown(self, owner: str, selected: int | None) -> Any:
        """The project picker; a newcomer sees "My project" (id 0), made with their first write."""
        with self.db.read_session() as s, s.begin():
            projects = storage.list_projects(s, owner, limit=200)
        choices = [(p.name, p.id) for p in projects] or [(storage.DEFAULT_PROJECT_NAME, 0)]
        return gr.update(choices=choices, value=selected or (projects[0].id if projects else 0))

    def history(self, owner: str, project_id: int | None) -> HistoryView:
        """The project's takes, newest first, as gallery items."""
        if not project_id:
            return HistoryView([], [])
        with self.db.read_session() as s, s.begin():
            if storage.get_project(s, owner, project_id) is None:
                return HistoryView([], [])
            takes = storage.list_takes(s, owner, project_id, limit=HISTORY_LIMIT)
        items = [(self._poster(t), caption(t)) for t in takes]
        return HistoryView(items, [t.id for t in takes])

    def _poster(self, take: storage.TakeRecord) -> str:
        if take.poster_path and not take.media_missing:
            return self.views.of(self.db.media.resolve(take.poster_path))
        return self.placeholders.get(str(take.status), self.placeholders["pending"])

    def refresh_history(self, owner: str, project_id: int | None) -> tuple[Any, Any]:
        """Gallery items and ids for the current project."""
        view = self.history(owner, project_id)
        return view.items, view.take_ids

    def switch_project(self, owner: str, project_id: int | None) -> tuple[Any, ...]:
        """Show another project's history and clear the selection."""
        view = self.history(owner, project_id)
        return view.items, view.take_ids, None, "", project_id

    def create_project(self, owner: str, name: str) -> tuple[Any, ...]:
        """Create a project and switch to it."""
        try:
            with self.db.session() as s, s.begin():
                project = storage.create_project(s, owner, name)
        except storage.StorageError as exc:
            raise gr.Error(str(exc)) from None
        view = self.history(owner, project.id)
        return (self._project_dropdown(owner, project.id), view.items, view.take_ids, "",
                project.id)

    def rename_project(self, owner: str, project_id: int | None, name: str) -> tuple[Any, ...]:
        """Rename the current project (a newcomer's not-yet-made one is made under that name)."""
        try:
            with self.db.session() as s, s.begin():
                if project_id:
                    project = storage.rename_project(s, owner, int(project_id), name)
                else:
                    project = storage.create_project(s, owner, name)
        except storage.StorageError as exc:
            raise gr.Error(str(exc)) from None
        return self._project_dropdown(owner, project.id), "", project.id

    def delete_project(self, owner: str, project_id: int | None) -> tuple[Any, ...]:
        """Delete the current project and its takes, then show another (or an empty "My project")."""
        if not project_id:
            raise gr.Error("This project has nothing in it yet, so there is nothing to delete.")
        try:
            with self.db.session() as s, s.begin():
                storage.delete_project(s, owner, int(project_id))
            with self.db.read_session() as s, s.begin():
                project = storage.get_default_project(s, owner)
        except storage.StorageError as exc:
            raise gr.Error(str(exc)) from None
        project_id = project.id if project else None
        view = self.history(owner, project_id)
        return (self._project_dropdown(owner, project_id), view.items, view.take_ids, None,
                project_id)

    # -- takes ------------------------------------------------------------------------------

    def _take(self, owner: str, take_id: int | None) -> storage.TakeRecord:
        if not take_id:
            raise gr.Error("Select a take in the history first.")
        with self.db.read_session() as s, s.begin():
            take = storage.get_take(s, owner, int(take_id))
        if take is None:
            raise gr.Error("That take no longer exists.")
        return take

    def select_take(self, owner: str, take_ids: list[int], evt: gr.SelectData) -> tuple[Any, ...]:
        """Show the selected take's video and settings."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not take_ids or index >= len(take_ids):
            return None, gr.skip(), gr.skip(), gr.skip()
        take = self._take(owner, take_ids[index])
        return take.id, self._video_view(take), self.details_html(take), self._favourite_label(take)

    def _video(self, take: storage.TakeRecord) -> Path | None:
        if take.video_path and not take.media_missing:
            return self.db.media.resolve(take.video_path)
        return None

    def _video_view(self, take: storage.TakeRecord) -> str | None:
        """The take's video as Gradio may serve it (a view copy, never the media path)."""
        video = self._video(take)
        return self.views.of(video) if video is not None else None

    @staticmethod
    def _favourite_label(take: storage.TakeRecord) -> str:
        return "★ Favourite" if take.favourite else "☆ Favourite"

    @staticmethod
    def details_html(take: storage.TakeRecord) -> str:
        """The selected take's status, error, lineage and settings."""
        rows = forms.settings_summary(take.request)
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        extra = ""
        if take.error:
            extra += f'<p class="take-error">{html.escape(take.error)}</p>'
        if take.parent_id:
            extra += f"<p>{html.escape(str(take.parent_kind))} of take #{take.parent_id}</p>"
        if take.media_missing:
            extra += '<p class="take-error">A media file of this take is missing on disk.</p>'
        return (f'<div class="take-details" data-take="{take.id}"><h4>Take #{take.id} · '
                f'{html.escape(str(take.status))}</h4>{extra}<table>{body}</table></div>')

    def remix(self, owner: str, take_id: int | None) -> tuple[Any, ...]:
        """Load a take's settings (controls included) into the form; the next take records it."""
        take = self._take(owner, take_id)
        values = forms.form_from_stored(take.request)
        if take.image_path:
            values["image"] = self.views.of(self.db.media.resolve(take.image_path))
        lineage = {"parent_id": take.id, "kind": "remix"}
        return (*self._form_updates(values), lineage,
                message_html(f"Remixing take #{take.id}: change what you like, then Generate."))

    def continue_take(self, owner: str, take_id: int | None) -> tuple[Any, ...]:
        """Use a take's last frame as the start image of an image-to-video take."""
        from pipelines.video import last_frame

        take = self._take(owner, take_id)
        video = self._video(take)
        if video is None:
            raise gr.Error("Only a finished take with a video can be continued.")
        available = self.manager.available()
        variant_id = "i2v-a14b" if "i2v-a14b" in available or "ti2v-5b" not in available else "ti2v-5b"
        image = self.scratch.new_file(".png")
        last_frame(video).save(image)
        values = forms.form_from_stored(take.request)
        values.update(forms.form_for_variant(variant_id, self.defaults(variant_id)))
        values.update(variant=variant_id, image=str(image), seed=-1)
        lineage = {"parent_id": take.id, "kind": "continue"}
        return (*self._form_updates(values), lineage,
                message_html(f"Continuing take #{take.id} from its last frame with {variant_id}: "
                             "describe the motion and camera movement, then Generate."))

    @staticmethod
    def _form_updates(values: dict[str, Any]) -> list[Any]:
        """Form widget values in FORM_FIELDS order, showing the inputs the variant takes."""
        spec = get_variant(values["variant"])
        shown = dict(values)
        shown["image"] = gr.update(value=values["image"], visible=spec.takes_image)
        shown["guidance_low"] = gr.update(value=values["guidance_low"], visible=spec.experts == 2)
        return [shown[name] for name in forms.FORM_FIELDS]

    def share(self, owner: str, take_id: int | None, include_image: bool,
              request: gr.Request) -> str:
        """Make (or reuse) the selected take's share link and show its URL; the page shows the
        start image only when `include_image` is ticked."""
        from . import share

        take = self._take(owner, take_id)
        try:
            return share.create_link(self.db, owner, take.id, hosting.public_base_url(request),
                                     include_image=bool(include_image))
        except (share.ShareError, ValueError) as exc:
            raise gr.Error(str(exc)) from None

    def revoke(self, owner: str, url: str) -> tuple[str, str]:
        """End the share link shown in the share box."""
        from . import share

        if not url:
            raise gr.Error("Share a take first; then Revoke ends that link.")
        if not share.revoke_link(self.db, owner, url):
            raise gr.Error("That link is not one of yours or was already revoked.")
        return "", message_html("The link is revoked: it now shows a not-found page.", "notice")

    def remix_from_link(self, request: gr.Request) -> tuple[Any, ...]:
        """`/?remix=<token>`: fill the form from a shared take (saved in this browser's project)."""
        from . import share

        token = (request.query_params.get("remix") if request is not None else None) or ""
        stored = share.load_remix(self.db, token) if token else None
        if stored is None:
            message = message_html("That remix link no longer works.", "notice") if token else gr.skip()
            return (*[gr.skip()] * len(forms.FORM_FIELDS), gr.skip(), message)
        values = forms.form_from_stored(stored)
        values["image"] = self.views.of(Path(stored["image_path"])) if stored.get("image_path") else None
        return (*self._form_updates(values), None,
                message_html("Remixing a shared take: change what you like, then Generate."))

    def toggle_favourite(self, owner: str, take_id: int | None,
                         project_id: int | None) -> tuple[Any, ...]:
        """Flip the selected take's favourite mark."""
        take = self._take(owner, take_id)
        with self.db.session() as s, s.begin():
            take = storage.set_favourite(s, owner, take.id, not take.favourite)
        view = self.history(owner, project_id)
        return self._favourite_label(take), view.items, view.take_ids

    def delete_take(self, owner: str, take_id: int | None, project_id: int | None) -> tuple[Any, ...]:
        """Delete the selected take and its files (a running take is cancelled first)."""
        take = self._take(owner, take_id)
        if str(take.status) in ("pending", "running"):
            raise gr.Error("This take is still running: cancel it first.")
        with self.db.session() as s, s.begin():
            storage.delete_take(s, owner, take.id)
        view = self.history(owner, project_id)
        return None, None, "", view.items, view.take_ids

    # -- generation -------------------------------------------------------------------------

    def field_errors(self, *values: Any) -> tuple[Any, ...]:
        """Error slots (variant, prompt, image, controls, settings) and a red mark on the control
        at fault; everything empty when the form is valid."""
        slots = {slot: "" for slot in forms.ERROR_SLOTS}
        marked = None
        try:
            self.request(forms.form_dict(values))
        except RequestError as exc:
            slot = forms.error_slot(exc.field)
            slots[slot] = message_html(str(exc), "error")
            marked = exc.field if exc.field in forms.FORM_FIELDS else None
        marks = [gr.update(elem_classes=["field-error"] if name == marked else [])
                 for name in forms.FORM_FIELDS]
        return (*slots.values(), *marks)

    def require_valid(self, *values: Any) -> None:
        """Stop the generate chain with the message when the form is invalid."""
        try:
            self.request(forms.form_dict(values))
        except RequestError as exc:
            raise gr.Error(str(exc)) from None

    def request(self, form: dict[str, Any]) -> forms.FormRequest:
        """Validate a form into a request for a variant that has weights, within this studio's
        work limit."""
        variant_id = str(form.get("variant") or "")
        if variant_id in VARIANTS and variant_id not in self.manager.available():
            if not self.manager.available():
                raise RequestError(no_weights_message(), "variant")
            raise RequestError(f"No weights are configured for {variant_id}: pick "
                               f"{' or '.join(self.manager.available())}, or restart with "
                               f"--weights {variant_id}=PATH_OR_HUB_ID.", "variant")
        defaults = self.defaults(variant_id) if variant_id in VARIANTS else None
        made = forms.request_from_form(form, defaults)
        self.limits.check_work(made.request, self.manager.device())
        return made

    def project_for_write(self, owner: str, project_id: int | None) -> int:
        """The project a new take goes into: the chosen one, else the owner's default (made now:
        an owner's rows appear with their first write)."""
        if project_id:
            return int(project_id)
        with self.db.session() as s, s.begin():
            return storage.get_or_create_default_project(s, owner).id

    def generate(self, owner: str, project_id: int | None, lineage: Any,
                 *values: Any) -> Iterator[tuple[Any, ...]]:
        """Run a take, streaming (preview, progress, video, current take, gallery, gallery ids,
        project dropdown, project id)."""
        try:
            form_request = self.request(forms.form_dict(values))
        except RequestError as exc:
            self.scratch.discard(forms.form_dict(values).get("image"))
            raise gr.Error(str(exc)) from None
        project_id = self.project_for_write(owner, project_id)
        parent_id = lineage.get("parent_id") if isinstance(lineage, dict) else None
        parent_kind = lineage.get("kind") if isinstance(lineage, dict) else None
        notices = " ".join(form_request.notices)
        skip = gr.skip()
        try:
            updates = self.runner.generate(owner, project_id, form_request.request,
                                           form_request.stored_dict(), parent_id, parent_kind)
            for update in updates:
                if update.kind == "started":
                    view = self.history(owner, project_id)
                    text = (update.message or "Loading the model…") + (f" {notices}" if notices else "")
                    yield (empty_preview_html("Waiting for the first denoising step…"),
                           message_html(text), None, update.take_id, view.items, view.take_ids,
                           self._project_dropdown(owner, project_id), project_id)
                elif update.kind == "step":
                    yield (skip, progress_html(update.step, update.total, update.expert,
                                               update.elapsed_s, update.eta_s),
                           skip, skip, skip, skip, skip, skip)
                elif update.kind == "preview" and update.preview is not None:
                    yield (preview_html(update.preview, update.step, update.total,
                                        update.expert or ""), skip, skip, skip, skip, skip, skip, skip)
                elif update.kind == "decoding":
                    yield (skip, progress_html(update.total, update.total, None, update.elapsed_s,
                                               0.0, phase="decoding"),
                           skip, skip, skip, skip, skip, skip)
                else:
                    yield (*self._final(owner, project_id, update, notices), skip, skip)
        except QueueFull as exc:
            raise gr.Error(str(exc)) from None

    def _final(self, owner: str, project_id: int, update: JobUpdate,
               notices: str) -> tuple[Any, ...]:
        view = self.history(owner, project_id)
        if update.kind == "done" and update.take is not None:
            text = f"Take #{update.take_id} done in {update.elapsed_s:.1f} s."
            extra = " ".join(x for x in (notices, update.message) if x)
            return (gr.skip(), message_html(f"{text} {extra}".strip(), "done"),
                    self._video_view(update.take), update.take_id, view.items, view.take_ids)
        kind = "error" if update.kind == "failed" else "notice"
        return (gr.skip(), message_html(update.message, kind), None, update.take_id,
                view.items, view.take_ids)

    def cancel(self, owner: str, take_id: int | None) -> str:
        """Stop the running take of this browser within one step (it is kept as cancelled)."""
        if take_id and self.runner.cancel(owner, int(take_id)):
            return message_html("Cancelling: stopping after the current step…", "notice")
        return message_html("Cancelled.", "notice")
