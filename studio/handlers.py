"""What the studio's controls do: plain methods over storage, the model manager and the queue.

They take form values by name and return small frozen views (`TakeView`, `HistoryView`,
`ProjectList`, `FormFill`, ...) that `studio.ui` maps onto its components in one place, so tests
call them without a browser and no tuple has to line up with another file. Failures a person can
act on raise `gr.Error` with a sentence.
"""

from __future__ import annotations

import html
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

import gradio as gr

import storage
from pipelines.errors import RequestError, StudioError
from pipelines.recipe import Recipe, file_sha256
from pipelines.request import MAX_SEED, VariantDefaults
from pipelines.variants import VARIANTS, continue_variant

from . import forms, hosting
from .creative import CreativeActions, GroupView
from .forms import FormFill
from .jobs import Jobs
from .limits import Limits
from .media_links import MediaSigner
from .owners import StudioSecrets, ensure_owner_key, legacy_account_owner_key
from .progress_view import message_html
from .scratch import ScratchSpace
from .share import share_url
from .shots import shown_video
from .take_events import TakeEvent
from .views import ViewCopies

log = logging.getLogger(__name__)

HISTORY_LIMIT = 60
STATUS_LABELS = {"pending": "queued", "running": "running", "completed": "done",
                 "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted"}


@dataclass(frozen=True)
class HistoryView:
    """Gallery items (image, caption) and the take id behind each one."""

    items: list[tuple[str, str]]
    take_ids: list[int]
    finished: list[tuple[str, int]] = field(default_factory=list)  # (caption, id): Compare's choices


@dataclass(frozen=True)
class ProjectList:
    """The project picker: (name, id) choices and the one shown (0: a newcomer's, not made yet)."""

    choices: list[tuple[str, int]]
    selected: int


@dataclass(frozen=True)
class TakeView:
    """Everything the monitor shows about the selected take (all empty for none)."""

    take_id: int | None = None
    video: str | None = None  # a view copy Gradio may serve
    details: str = ""
    favourite: bool = False
    share_url: str = ""  # its live share link, if it has one
    share_image: bool = False  # that link shows the start image
    has_image: bool = False  # the take began from an image (the share box offers to show it)
    finished: bool = False
    decodable: bool = False  # its decode failed but its latents were kept: it can be decoded again
    in_batch: bool = False  # one of a batch of variations ("keep only this one")
    group: GroupView = field(default_factory=GroupView)  # its batch, or its shot's parts


@dataclass(frozen=True)
class Page:
    """What a page load shows: the owner, their projects and history, a take still running."""

    browser_key: str
    owner: str
    projects: ProjectList
    project_id: int | None
    history: HistoryView
    unfinished: int | None  # a queued or running take of the project, to watch again


@dataclass(frozen=True)
class FormCheck:
    """The form's problem, if any: the sentence, the message slot and the field to mark."""

    message: str = ""
    slot: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Submitted:
    """A take just queued."""

    take_id: int  # the first of them
    project_id: int
    notices: tuple[str, ...] = field(default=())
    take_ids: tuple[int, ...] = ()  # every take queued (several for variations)


def no_weights_message() -> str:
    """What to do when no variant has weights."""
    return ("No weights are configured: start the studio with "
            "`python app.py serve --weights t2v-a14b=/path/to/folder-or-hub-id` "
            "(repeat --weights for i2v-a14b and ti2v-5b).")


def caption(take: storage.TakeRecord, position: int | None = None, group: str = "") -> str:
    """A history tile's caption: a short live status first (and `group`: which variation, or
    "shot"), then when and the prompt."""
    status = str(take.status)
    if status == "pending":
        state = f"queued #{position}" if position else "queued"
    elif status == "running" and take.total_steps:
        state = f"running {take.step}/{take.total_steps}"
    else:
        state = STATUS_LABELS.get(status, status)
    if group:
        state += f" · {group}"
    star = "★ " if take.favourite else ""
    when = take.queued_at.strftime("%H:%M") if isinstance(take.queued_at, datetime) else ""
    prompt = take.prompt if len(take.prompt) <= 40 else take.prompt[:39] + "…"
    return f"{star}#{take.id} {state} · {when} · {prompt}"


def group_labels(takes: list[storage.TakeRecord]) -> dict[int, str]:
    """Short labels for takes that belong together: "var 2/4" within a batch of variations
    (counted among the listed takes), "shot" for an extension that plays its whole shot."""
    batches: dict[int, list[int]] = {}
    for take in takes:
        if take.batch_id:
            batches.setdefault(take.batch_id, []).append(take.id)
    labels = {}
    for take in takes:
        if take.shot_path:
            labels[take.id] = "shot"
        elif take.batch_id and len(batches[take.batch_id]) > 1:
            members = sorted(batches[take.batch_id])
            labels[take.id] = f"var {members.index(take.id) + 1}/{len(members)}"
    return labels


class Handlers(CreativeActions):
    """The studio's actions, bound to one store, model manager and queue."""

    def __init__(self, store: storage.Store, manager: Any, jobs: Jobs,
                 placeholders: dict[str, str], secrets: StudioSecrets, scratch: ScratchSpace,
                 limits: Limits | None = None, prompt_helper: Any = None) -> None:
        self.store = store
        self.manager = manager
        self.jobs = jobs
        self.placeholders = placeholders
        self.secrets = secrets  # the server one signs media URLs and derives signed-in owner keys
        self.signer = MediaSigner(secrets.server)
        self.scratch = scratch
        self.views = ViewCopies(scratch.views)
        self.limits = limits or Limits()
        self.prompt_helper = prompt_helper  # a pipelines.prompt_helper.PromptHelper, or None

    # -- variants and the form -------------------------------------------------------------------

    def defaults(self, variant_id: str) -> VariantDefaults:
        """The defaults a variant's form starts from (weights folder's studio.json, else official)."""
        return self.manager.defaults_for(variant_id)

    def initial_variant(self) -> str:
        """The variant the form opens with: the first one that has weights."""
        available = self.manager.available()
        return available[0] if available else next(iter(VARIANTS))

    def weights_note(self) -> str:
        """A banner about the weights in use: none, or what the demo weights know."""
        available = self.manager.available()
        if not available:
            return message_html(no_weights_message(), "error")
        demo = [v for v in available if self.manager.is_demo(v)]
        if not demo:
            return ""
        knows = self.manager.demo_knowledge(demo[0]) or {}
        rows = "".join(f"<li><b>{html.escape(what)}</b>: {html.escape(', '.join(terms))}</li>"
                       for what, terms in knows.items() if terms)
        return (f'<details class="status-msg status-notice demo-note"><summary>Demo weights '
                f'({html.escape(", ".join(demo))}): tiny models that know only a few words. '
                f'What they know</summary><ul>{rows}</ul><p>Pass --weights for the real Wan2.2 '
                f'models.</p></details>')

    def machine_note(self) -> str:
        """Which memory profile takes run with here (and so what this machine can hold)."""
        available = self.manager.available()
        if not available:
            return ""
        profile = self.manager.profile_for(available[0])
        return message_html(f"Memory profile {profile.name} on {self.manager.device()}: "
                            f"{profile.summary}.", "info")

    def lora_choices(self) -> list[tuple[str, str]]:
        """The LoRA picker: the studio's own LoRA files (the operator adds them to loras/)."""
        return [("—", forms.NONE)] + [(lora.name, lora.name)
                                      for lora in self.manager.available_loras()]

    @staticmethod
    def preset_choices(variant_id: str) -> list[tuple[str, str]]:
        """The step-distill presets made for a variant."""
        from pipelines.presets import presets_for

        return [("— (the variant's own steps)", forms.NONE)] + [
            (preset.label, preset.id) for preset in presets_for(variant_id)]

    def variant_choices(self) -> list[tuple[str, str]]:
        """Variant dropdown choices; variants without weights say so."""
        available = set(self.manager.available())
        return [(spec.label + ("" if spec.id in available else " — no weights"), spec.id)
                for spec in VARIANTS.values()]

    @staticmethod
    def random_seed() -> int:
        """A new random seed."""
        return random.SystemRandom().randint(0, MAX_SEED)

    @staticmethod
    def compose(form: Mapping[str, Any]) -> str:
        """The live final prompt for the current form (or the problem with a control)."""
        try:
            return forms.final_prompt(form)
        except RequestError as exc:
            return str(exc)

    def request(self, form: Mapping[str, Any]) -> forms.FormRequest:
        """Validate a form into a request for a variant that has weights, within this studio's
        work limit (RequestError naming the field otherwise)."""
        variant_id = str(form.get("variant") or "")
        if variant_id in VARIANTS and variant_id not in self.manager.available():
            if not self.manager.available():
                raise RequestError(no_weights_message(), "variant")
            raise RequestError(f"No weights are configured for {variant_id}: pick "
                               f"{' or '.join(self.manager.available())}, or restart with "
                               f"--weights {variant_id}=PATH_OR_HUB_ID.", "variant")
        defaults = self.defaults(variant_id) if variant_id in VARIANTS else None
        made = forms.request_from_form(form, defaults)
        forms.variation_count(form)  # checked with the rest, so its sentence shows beside Generate
        self.limits.check_work(made.request, self.manager.device())
        self._check_loras(made.request)
        return made

    def _check_loras(self, request: Any) -> None:
        """A visitor picks LoRAs among the studio's own files (no path, no Hub download on the
        server's account); a preset's files come from the operator's preset source."""
        if not request.loras and not request.preset:
            return
        allowed = sorted(lora.name for lora in self.manager.available_loras())
        for lora in request.loras:
            if lora.source not in allowed:
                choices = (f"pick one of: {', '.join(allowed)}" if allowed else
                           "this studio has none (the operator adds .safetensors files to the "
                           "data folder's loras/ folder)")
                raise RequestError(f"There is no LoRA called {lora.source!r} here; {choices}.",
                                   "loras")
        self.manager.resolve_loras(request)  # a missing or unreadable file: one sentence now

    def check(self, form: Mapping[str, Any]) -> FormCheck:
        """The form's first problem (its sentence, the slot beside its control, the field to
        mark), or an empty check when it is ready to generate."""
        try:
            self.request(form)
        except StudioError as exc:
            field_name = getattr(exc, "field", None)
            field_name = field_name if field_name in forms.FORM_FIELDS else None
            log.info("form refused: %s", exc)
            return FormCheck(str(exc), forms.error_slot(getattr(exc, "field", None)), field_name)
        return FormCheck()

    # -- owner, projects, history ----------------------------------------------------------------

    def load(self, browser_key: str | None, profile: gr.OAuthProfile | None = None,
             project_id: int | None = None) -> Page:
        """Page load: the browser's key (kept or made), the owner (the Hugging Face account when
        signed in, else the browser), the project the browser was last in (if still theirs), its
        history, and a take of it still queued or running. Nothing is written for a newcomer."""
        browser_key = ensure_owner_key(browser_key)
        owner = hosting.owner_key(profile, browser_key, self.secrets.server)
        username = hosting.signed_in_username(profile)
        if username:
            self._adopt_legacy_account(username, owner)
        project = self.store.get_project(owner, project_id) if _is_id(project_id) else None
        project = project or self.store.default_project(owner)
        chosen = project.id if project else None
        history = self.history(owner, chosen)
        return Page(browser_key, owner, self.projects(owner, chosen), chosen, history,
                    self.unfinished(owner, chosen))

    def _adopt_legacy_account(self, username: str, owner: str) -> None:
        """Move an account's projects from its old key (derived from the public browser-state
        secret, so anyone could compute it) to its key under the server secret."""
        legacy = legacy_account_owner_key(username, self.secrets.browser_state)
        moved = self.store.move_owner(legacy, owner)
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
        note = hosting.history_note(self.store.db.data_dir)
        return message_html(note, "notice") if note else ""

    def projects(self, owner: str, selected: int | None) -> ProjectList:
        """The project picker; a newcomer sees "My project" (id 0), made with their first write."""
        projects = self.store.list_projects(owner)
        choices = [(p.name, p.id) for p in projects] or [(storage.DEFAULT_PROJECT_NAME, 0)]
        return ProjectList(choices, selected or (projects[0].id if projects else 0))

    def history(self, owner: str, project_id: int | None) -> HistoryView:
        """The project's takes, newest first, as gallery items with their live status."""
        if not project_id:
            return HistoryView([], [])
        try:
            takes = self.store.list_takes(owner, project_id, limit=HISTORY_LIMIT)
        except storage.NotFoundError:
            return HistoryView([], [])
        positions = self.jobs.positions(owner) if any(not t.finished for t in takes) else {}
        hidden = self.hidden_parts(takes)  # shown inside their shot instead
        shown = [t for t in takes if t.id not in hidden]
        groups = group_labels(takes)
        items = [(self._poster(t), caption(t, positions.get(t.id), groups.get(t.id, "")))
                 for t in shown]
        finished = [(caption(t, None, groups.get(t.id, "")), t.id) for t in shown
                    if t.status == storage.TakeStatus.COMPLETED]
        return HistoryView(items, [t.id for t in shown], finished)

    def unfinished(self, owner: str, project_id: int | None) -> int | None:
        """The project's oldest take still queued or running, if any (the one that runs first;
        watching it follows the rest of its batch)."""
        if not project_id:
            return None
        try:
            takes = self.store.list_takes(owner, project_id, limit=HISTORY_LIMIT)
        except storage.NotFoundError:
            return None
        return next((t.id for t in reversed(takes) if not t.finished), None)

    def _poster(self, take: storage.TakeRecord) -> str:
        poster = self.store.media_of(take, "poster")
        if poster is not None:
            return self.views.of(poster)
        return self.placeholders.get(str(take.status), self.placeholders["pending"])

    def create_project(self, owner: str, name: str) -> tuple[ProjectList, int]:
        """Create a project and switch to it (a name the owner already uses is refused)."""
        project = self.store.create_project(owner, name)
        return self.projects(owner, project.id), project.id

    def rename_project(self, owner: str, project_id: int | None, name: str) -> tuple[ProjectList, int]:
        """Rename the current project (a newcomer's not-yet-made one is made under that name)."""
        if project_id:
            project = self.store.rename_project(owner, int(project_id), name)
        else:
            project = self.store.create_project(owner, name)
        return self.projects(owner, project.id), project.id

    def delete_project(self, owner: str, project_id: int | None) -> tuple[ProjectList, int | None]:
        """Delete the current project and its takes, then show another (or an empty "My project")."""
        if not project_id:
            raise gr.Error("This project has nothing in it yet, so there is nothing to delete.")
        self.store.delete_project(owner, int(project_id))
        project = self.store.default_project(owner)
        chosen = project.id if project else None
        return self.projects(owner, chosen), chosen

    def export_project(self, owner: str, project_id: int | None) -> str:
        """The current project, its takes and their files, as one zip to download."""
        if not project_id:
            raise gr.Error("This project has nothing in it yet, so there is nothing to export.")
        project = self.store.get_project(owner, int(project_id))
        if project is None:
            raise gr.Error("That project no longer exists.")
        slug = "".join(ch if ch.isalnum() else "-" for ch in project.name.lower()).strip("-")[:40]
        target = self.scratch.new_named(f"wan-studio-{slug or 'project'}.zip")
        return str(self.store.export_project(owner, project.id, target))

    def import_project(self, owner: str, upload: str | None) -> tuple[ProjectList, int]:
        """A project from an export zip, added to this person's projects and shown."""
        if not upload:
            raise gr.Error("Choose a Wan Studio project export (.zip) to import.")
        project = self.store.import_project(owner, Path(upload))
        return self.projects(owner, project.id), project.id

    # -- one take --------------------------------------------------------------------------------

    def _take(self, owner: str, take_id: int | None) -> storage.TakeRecord:
        if not take_id:
            raise gr.Error("Select a take in the history first.")
        take = self.store.get_take(owner, int(take_id))
        if take is None:
            raise gr.Error("That take no longer exists.")
        return take

    def take_view(self, owner: str, take_id: int | None, base_url: str | None = None) -> TakeView:
        """What the monitor shows for a take (empty when there is none); its live share link is
        spelled under `base_url` (the public URL when one is configured)."""
        if not take_id:
            return TakeView()
        take = self.store.get_take(owner, int(take_id))
        if take is None:
            return TakeView()
        video = shown_video(self.store, take)  # each part's own video is a tile of its group
        link = self.store.live_link(owner, take.id) if take.status == "completed" else None
        url = share_url(_public_base(base_url), link.token) if link else ""
        return TakeView(take.id, self.views.of(video) if video else None, details_html(take),
                        take.favourite, url, bool(link and link.include_image),
                        bool(take.image_path), take.finished, take.decodable,
                        bool(take.batch_id), self.group_view(take))

    def select_take(self, owner: str, take_ids: list[int], index: int,
                    base_url: str | None = None) -> TakeView:
        """The take behind a history tile."""
        if not take_ids or not 0 <= index < len(take_ids):
            return TakeView()
        return self.take_view(owner, self._take(owner, take_ids[index]).id, base_url)

    def remix(self, owner: str, take_id: int | None) -> FormFill:
        """A take's settings (controls included) for the form; the next take records it."""
        take = self._take(owner, take_id)
        values = forms.form_from_recipe(Recipe.from_dict(take.request))
        for field_name, kind in (("image", "image"), ("end_image", "end_image")):
            stored = self.store.media_of(take, kind)
            values[field_name] = self.views.of(stored) if stored else None
        return FormFill(values, {"parent_id": take.id, "kind": "remix"},
                        f"Remixing take #{take.id}: change what you like, then Generate.")

    def continue_take(self, owner: str, take_id: int | None) -> FormFill:
        """A take's last frame as the start image of an image-to-video take."""
        from pipelines.video import last_frame

        take = self._take(owner, take_id)
        video = self.store.media_of(take, "video")
        if video is None:
            raise gr.Error("Only a finished take with a video can be continued.")
        variant_id = continue_variant(self.manager.available())
        image = self.scratch.new_file(".png")
        last_frame(video).save(image)
        values = forms.form_from_recipe(Recipe.from_dict(take.request))
        values.update(forms.form_for_variant(variant_id, self.defaults(variant_id)))
        values.update(variant=variant_id, image=str(image), seed=-1)
        return FormFill(values, {"parent_id": take.id, "kind": "continue"},
                        f"Continuing take #{take.id} from its last frame with {variant_id}: "
                        "describe the motion and camera movement, then Generate.")

    def remix_from_link(self, token: str) -> FormFill | None:
        """`/?remix=<token>`: a shared take's settings for the form (None: not a working link)."""
        from . import share

        shared = share.load_remix(self.store, token) if token else None
        if shared is None:
            return None
        recipe, image = shared
        values = forms.form_from_recipe(recipe)
        values["image"] = self.views.of(image) if image else None
        return FormFill(values, None, "Remixing a shared take: change what you like, then Generate.")

    def toggle_favourite(self, owner: str, take_id: int | None,
                         base_url: str | None = None) -> TakeView:
        """Flip the selected take's favourite mark."""
        take = self._take(owner, take_id)
        self.store.set_favourite(owner, take.id, not take.favourite)
        return self.take_view(owner, take.id, base_url)

    def delete_take(self, owner: str, take_id: int | None) -> None:
        """Delete the selected take and its files (a queued or running take is cancelled first)."""
        take = self._take(owner, take_id)
        if not take.finished:
            raise gr.Error("This take is still queued or running: cancel it first.")
        self.store.delete_take(owner, take.id)

    def share(self, owner: str, take_id: int | None, include_image: bool,
              base_url: str | None = None) -> TakeView:
        """Make (or reuse) the selected take's share link; the page shows the start image only
        when `include_image` is ticked."""
        from . import share

        take = self._take(owner, take_id)
        try:
            share.create_link(self.store, owner, take.id, include_image=bool(include_image))
        except share.ShareError as exc:
            raise gr.Error(str(exc)) from None
        return self.take_view(owner, take.id, base_url)

    def revoke(self, owner: str, take_id: int | None, base_url: str | None = None) -> TakeView:
        """End the selected take's share link (it then shows a not-found page)."""
        take = self._take(owner, take_id)
        link = self.store.live_link(owner, take.id)
        if link is None:
            raise gr.Error("This take has no live share link to revoke.")
        self.store.revoke(owner, link.token)
        return self.take_view(owner, take.id, base_url)

    # -- generation ------------------------------------------------------------------------------

    def submit(self, owner: str, project_id: int | None, lineage: Any,
               form: Mapping[str, Any]) -> Submitted:
        """Queue a take from the form (it runs whether or not this page stays open)."""
        try:
            made = self.request(form)
            self.limits.check_zero_gpu(made.request, signed_in=hosting.is_account_key(owner))
            count = forms.variation_count(form)
            parent = checked_lineage(lineage, made.image, count)
            project = self.store.project_for_write(owner, project_id or None)
        except Exception:  # refused or failed before the queue took the images: let them go
            self.scratch.discard(form.get("image"))
            self.scratch.discard(form.get("end_image"))
            raise
        if count > 1:  # a batch has no parent: each variation is a sibling of the others
            takes = self.jobs.submit_variations(owner, project, made.recipe(), count,
                                                image=made.image, end_image=made.end_image)
            return Submitted(takes[0].id, project, made.notices, tuple(t.id for t in takes))
        take = self.jobs.submit(owner, project, made.recipe(), image=made.image,
                                parent_id=parent.get("parent_id"), parent_kind=parent.get("kind"),
                                end_image=made.end_image)
        return Submitted(take.id, project, made.notices, (take.id,))

    def watch(self, take_id: int) -> Iterator[TakeEvent]:
        """The take's events until it ends; for one of a batch of variations, then those of the
        batch's later takes still to finish, one after another (they run in that order)."""
        yield from self.jobs.watch(int(take_id))
        take = self.store.find_take(int(take_id))
        if take is None or not take.batch_id:
            return
        for member in self.store.batch(take.owner, take.batch_id):
            if member.id > take.id and not member.finished:
                yield from self.jobs.watch(member.id)

    def decode_again(self, owner: str, take_id: int | None) -> int:
        """Queue the selected failed take to decode the latents it kept; its id, to watch."""
        take = self._take(owner, take_id)
        if not take.decodable:
            raise gr.Error("Only a take whose decode failed, and whose latents were kept, can be "
                           "decoded again.")
        return self.jobs.decode_again(owner, take.id).id

    def cancel(self, owner: str, take_id: int | None) -> str:
        """Stop the selected take: a queued one at once, a running one within a step."""
        if take_id and self.jobs.cancel(owner, int(take_id)):
            return message_html(f"Cancelling take #{take_id}…", "notice")
        return message_html("There is no queued or running take to cancel.", "notice")


def checked_lineage(lineage: Any, image: str | None, count: int) -> dict[str, Any]:
    """The lineage the next take records. An extension must be one take that starts from its
    parent's last frame; one whose start image was changed is recorded as a remix instead (it is
    not the same shot, so it must not be joined to the parent)."""
    parent = dict(lineage) if isinstance(lineage, dict) else {}
    if parent.get("kind") != "extend":
        return parent
    if count > 1:
        raise RequestError("An extension is one take: set the number of takes to 1, then "
                           "Generate.", "variations")
    if not image or file_sha256(image) != parent.get("frame"):
        return {"parent_id": parent.get("parent_id"), "kind": "remix"}
    return {"parent_id": parent.get("parent_id"), "kind": "extend"}


def details_html(take: storage.TakeRecord) -> str:
    """The take's status, error, lineage and recipe as a small table."""
    try:
        rows = forms.settings_summary(Recipe.from_dict(take.request))
    except (TypeError, ValueError):
        rows = [("Prompt", take.prompt)]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    extra = ""
    if take.error and take.status != "completed":
        extra += f'<p class="take-error">{html.escape(take.error)}</p>'
    if take.parent_id:
        extra += f"<p>{html.escape(str(take.parent_kind))} of take #{take.parent_id}</p>"
    if take.shot_path:
        extra += ("<p>The player shows the whole shot: this take joined to the takes it "
                  "extends, colour-matched at each seam.</p>")
    if take.media_missing:
        extra += '<p class="take-error">A media file of this take is missing on disk.</p>'
    state = STATUS_LABELS.get(str(take.status), str(take.status))
    return (f'<div class="take-details" data-take="{take.id}"><h4>Take #{take.id} · '
            f'{html.escape(state)}</h4>{extra}<table>{body}</table></div>')


def _public_base(request_base: str | None) -> str:
    """The base of share links: the configured public URL, else the page's own address."""
    try:
        return hosting.public_base_url(None)
    except ValueError:
        return (request_base or "").rstrip("/")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
