"""The studio's Blocks: layout, and the one place that maps handler views onto components.

Handlers (`studio.handlers`) take form values by name and return small views; the functions
below turn each view into a {component: value} dict, and `render` turns each take event into
what the monitor shows, with one `match`. Every wired function goes through
`studio.errors.user_errors`, so a failure reaches the page as a sentence.

Layout: the shot (model, prompt, start image) and Generate come first, so at 1366x768 the prompt,
Generate and the live preview are all in view; the monitor column stays in view while the page
scrolls; the cinematic controls and settings follow; the projects and history come last. On a
phone everything stacks in one column.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import gradio as gr

from pipelines.events import DecodingEvent, StepEvent
from pipelines.prompting import VOCABULARY
from pipelines.request import DEFAULT_NEGATIVE_PROMPT
from pipelines.variants import get_variant

from . import forms, hosting
from .api import register_api
from .errors import user_errors
from .creative import COMPARE_SYNC_JS
from .handlers import FormFill, Handlers, HistoryView, ProjectList, TakeView
from .progress_view import empty_preview_html, message_html, preview_html, progress_html
from .take_events import PreviewImage, TakeEvent, TakeFinished, TakeQueued, TakeStarted

GENERATION_SLOT = "generation"  # one concurrency group shared by the UI and the API
WATCHERS = 64  # take watches streaming at once (each only waits on the bus)
HISTORY_REFRESH_S = 2.0  # while a take runs, its history tile's step is refreshed this often

CONTROL_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Lighting", (("light_source", "Light source"), ("light_quality", "Quality / direction"),
                  ("time_of_day", "Time of day"))),
    ("Camera", (("shot_size", "Shot size"), ("camera_angle", "Angle"), ("lens", "Lens"),
                ("camera_movement", "Movement"), ("shot_type", "Shot type"))),
    ("Composition and color", (("composition", "Composition"), ("color_tone", "Color tone"))),
    ("Style", (("style", "Style"), ("effect", "Effect"))),
)


def _error_slot(name: str) -> gr.HTML:
    return gr.HTML("", elem_id=f"{name}-error", padding=False, container=False)


def _elem(name: str) -> str:
    return name.replace("_", "-")


def _base_url(request: gr.Request | None) -> str | None:
    try:
        return hosting.public_base_url(request)
    except ValueError:
        return None


def build_ui(handlers: Handlers) -> gr.Blocks:
    """Lay out the studio and wire every control to its handler."""
    variant_id = handlers.initial_variant()
    spec = get_variant(variant_id)
    defaults = handlers.defaults(variant_id)
    start = forms.form_for_variant(variant_id, defaults)
    widgets: dict[str, Any] = {}
    errors: dict[str, Any] = {}

    with gr.Blocks(title="Wan Studio", delete_cache=(3600, 3600), fill_width=True) as demo:
        # This secret is sent to every visitor (it is in the page config): it only keeps the
        # anonymous key readable by its own browser. Nothing the server signs uses it.
        browser_key = gr.BrowserState("", storage_key="wan-studio-owner",
                                      secret=handlers.secrets.browser_state)
        last_project = gr.BrowserState(None, storage_key="wan-studio-project")
        # Server-side session state: a client cannot change these.
        owner = gr.State("")
        project_id = gr.State(None)
        history_ids = gr.State([])
        selected = gr.State(None)  # the take the monitor and its actions refer to
        lineage = gr.State(None)
        group_ids = gr.State([])  # the takes behind the group tiles (variations, shot parts)

        with gr.Row(elem_id="topbar"):
            gr.HTML('<h1 class="studio-title">Wan Studio <span>Wan2.2 video</span></h1>')
            gr.HTML(handlers.weights_note() + handlers.machine_note(), elem_id="weights-note")
            sign_in_note = None
            if hosting.sign_in_enabled():  # needs the Space's OAuth app; absent elsewhere
                sign_in_note = gr.HTML("", elem_id="sign-in-note")
                gr.LoginButton(elem_id="sign-in", scale=0, min_width=200)
        history_note = handlers.history_note()
        if history_note:
            gr.HTML(history_note, elem_id="history-note")

        with gr.Row(elem_id="workspace", equal_height=False):
            with gr.Column(scale=5, min_width=320, elem_id="shot-panel"):
                widgets["variant"] = gr.Dropdown(handlers.variant_choices(), value=variant_id,
                                                 label="Model", elem_id="variant")
                errors["variant"] = _error_slot("variant")
                widgets["prompt"] = gr.Textbox(label="Shot", lines=3, max_lines=8, elem_id="prompt",
                                               placeholder="Subject + scene + motion, e.g. a red "
                                               "ball rolls across a meadow")
                improve = gr.Button("Improve prompt", size="sm", elem_id="improve-prompt",
                                    visible=handlers.prompt_helper is not None)
                with gr.Column(visible=False, elem_id="suggestion-box") as suggestion_box:
                    suggestion = gr.Textbox(label="Suggested shot (edit it, then use it)", lines=3,
                                            max_lines=8, elem_id="suggestion")
                    with gr.Row():
                        use_suggestion = gr.Button("Use it", size="sm", variant="primary",
                                                   elem_id="suggestion-use", min_width=80)
                        drop_suggestion = gr.Button("Keep mine", size="sm",
                                                    elem_id="suggestion-drop", min_width=80)
                errors["prompt"] = _error_slot("prompt")
                widgets["image"] = gr.Image(label="Start image", type="filepath", height=150,
                                            visible=spec.takes_image, elem_id="image",
                                            sources=["upload", "clipboard"])
                widgets["end_image"] = gr.Image(label="End image (optional: the take ends on it)",
                                                type="filepath", height=150,
                                                visible=spec.takes_last_image, elem_id="end-image",
                                                sources=["upload", "clipboard"])
                errors["image"] = _error_slot("image")
                with gr.Row(elem_id="actions"):
                    generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    widgets["variations"] = gr.Dropdown(
                        [("1 take", 1)] + [(f"{n} variations", n) for n in range(2, 9)], value=1,
                        show_label=False, elem_id="variations", scale=1, min_width=120,
                        container=False)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
                status = gr.HTML("", elem_id="generate-status", padding=False, container=False)
                final_prompt = gr.Textbox(label="Final prompt (sent and stored)", interactive=False,
                                          lines=2, max_lines=4, elem_id="final-prompt")
                with gr.Tabs(elem_id="controls"):
                    for group, controls in CONTROL_GROUPS:
                        with gr.Tab(group, elem_classes=["control-group"]):
                            with gr.Row():
                                for name, label in controls:
                                    widgets[name] = gr.Dropdown(
                                        [("—", "")] + [(t, t) for t in VOCABULARY[name]], value="",
                                        label=label, elem_id=_elem(name), min_width=140)
                errors["controls"] = _error_slot("controls")
                with gr.Accordion("Settings", open=True, elem_id="settings"):
                    with gr.Row(elem_classes=["number-row"]):
                        size_preset = gr.Dropdown(forms.size_presets(variant_id, defaults),
                                                  value=start["size_preset"], label="Size",
                                                  elem_id="size-preset", min_width=150)
                        widgets["width"] = gr.Number(start["width"], label="Width", precision=0,
                                                     elem_id="width", min_width=90)
                        widgets["height"] = gr.Number(start["height"], label="Height", precision=0,
                                                      elem_id="height", min_width=90)
                        # follows typed frames too (a count off the list shows as itself)
                        frames_preset = gr.Dropdown(forms.frame_presets(defaults),
                                                    value=start["frames"], label="Frame preset",
                                                    elem_id="frames-preset", min_width=100,
                                                    allow_custom_value=True)
                        widgets["frames"] = gr.Number(start["frames"], label="Frames (4n+1)",
                                                      precision=0, elem_id="frames", min_width=90)
                    with gr.Row(elem_classes=["number-row"]):
                        widgets["steps"] = gr.Number(start["steps"], label="Steps", precision=0,
                                                     elem_id="steps", min_width=80)
                        widgets["seed"] = gr.Number(-1, label="Seed (-1 random)", precision=0,
                                                    elem_id="seed", min_width=130)
                        seed_button = gr.Button("Random", elem_id="seed-random", min_width=80,
                                                scale=0, size="sm")
                        widgets["guidance"] = gr.Number(start["guidance"], label="Guidance high",
                                                        elem_id="guidance", min_width=100)
                        widgets["guidance_low"] = gr.Number(start["guidance_low"],
                                                            label="Guidance low",
                                                            visible=spec.experts == 2,
                                                            elem_id="guidance-low", min_width=100)
                        widgets["flow_shift"] = gr.Number(start["flow_shift"], label="Flow shift",
                                                          elem_id="flow-shift", min_width=90)
                    with gr.Accordion("Presets, LoRAs and speed", open=False, elem_id="speed"):
                        with gr.Row(elem_classes=["number-row"]):
                            widgets["preset"] = gr.Dropdown(
                                handlers.preset_choices(variant_id), value=forms.NONE,
                                label="Step-distill preset (sets steps and guidance)",
                                elem_id="preset", min_width=200)
                            widgets["image_fit"] = gr.Radio(
                                [("Keep its shape", "fit"), ("Crop to fill", "crop")], value="fit",
                                label="Start image", elem_id="image-fit", min_width=160,
                                visible=spec.takes_image)
                        for slot in range(1, forms.LORA_SLOTS + 1):
                            with gr.Row(elem_classes=["number-row"]):
                                widgets[f"lora_{slot}"] = gr.Dropdown(
                                    handlers.lora_choices(), value=forms.NONE, label=f"LoRA {slot}",
                                    elem_id=f"lora-{slot}", min_width=160)
                                widgets[f"lora_{slot}_high"] = gr.Number(
                                    1.0, label="Strength high", elem_id=f"lora-{slot}-high",
                                    min_width=90, minimum=0, maximum=4)
                                widgets[f"lora_{slot}_low"] = gr.Number(
                                    1.0, label="Strength low", elem_id=f"lora-{slot}-low",
                                    min_width=90, minimum=0, maximum=4)
                        with gr.Row(elem_classes=["number-row"]):
                            widgets["cache"] = gr.Dropdown(
                                [("None", "none"), ("First-block cache", "first-block"),
                                 ("TaylorSeer", "taylorseer")], value="none", label="Step cache",
                                elem_id="cache", min_width=140)
                            widgets["attention"] = gr.Dropdown(
                                ["native", "flash", "_flash_3", "sage"], value="native",
                                label="Attention", elem_id="attention", min_width=110)
                            widgets["compile"] = gr.Checkbox(False, label="Compile blocks",
                                                             elem_id="compile", min_width=120)
                    with gr.Accordion("Negative prompt (official default)", open=False):
                        widgets["negative_prompt"] = gr.Textbox(DEFAULT_NEGATIVE_PROMPT, lines=2,
                                                                show_label=False,
                                                                elem_id="negative-prompt")
                    errors["settings"] = _error_slot("settings")

            with gr.Column(scale=6, min_width=320, elem_id="monitor-panel"):
                with gr.Column(elem_id="live"):  # stays in view while the page scrolls
                    preview = gr.HTML(empty_preview_html(), elem_id="preview")
                    progress = gr.HTML("", elem_id="progress")
                video = gr.Video(label="Take", autoplay=True, loop=True, interactive=False,
                                 elem_id="video", height=240)
                with gr.Row(elem_id="take-actions"):
                    remix = gr.Button("Remix", size="sm", elem_id="remix", min_width=70)
                    continue_button = gr.Button("Continue", size="sm", elem_id="continue",
                                                min_width=70)
                    extend = gr.Button("Extend", size="sm", elem_id="extend", min_width=70)
                    favourite = gr.Button("☆ Favourite", size="sm", elem_id="favourite",
                                          min_width=90)
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-take",
                                       min_width=70)
                    decode_again = gr.Button("Decode again", size="sm", elem_id="decode-again",
                                             min_width=100, visible=False)
                with gr.Row(visible=False, elem_id="delete-take-confirm") as delete_confirm:
                    gr.HTML('<p class="confirm-text">Delete this take and its files for good?</p>')
                    delete_yes = gr.Button("Delete it", size="sm", variant="stop",
                                           elem_id="delete-take-yes", min_width=80)
                    delete_no = gr.Button("Keep it", size="sm", elem_id="delete-take-no",
                                          min_width=80)
                with gr.Row(elem_id="share-bar"):
                    share = gr.Button("Share", size="sm", elem_id="share", scale=1, min_width=70)
                    share_url = gr.Textbox(label="Share link", interactive=False, buttons=["copy"],
                                           elem_id="share-url", scale=4, min_width=160)
                    revoke = gr.Button("Revoke", size="sm", elem_id="share-revoke", scale=1,
                                       min_width=70)
                share_image = gr.Checkbox(False, label="Show the start image on the share page",
                                          elem_id="share-image", container=False, visible=False)
                with gr.Column(visible=False, elem_id="take-group") as group_box:
                    group = gr.Gallery(label="Variations", columns=4, height=240,
                                       allow_preview=False, object_fit="cover",
                                       elem_id="group-tiles")
                    keep_only = gr.Button("Keep only this one", size="sm", elem_id="keep-only",
                                          visible=False, min_width=120)
                details = gr.HTML("", elem_id="take-details")
                with gr.Row(elem_id="compare-bar"):
                    compare_with = gr.Dropdown([], label="Compare with", elem_id="compare-with",
                                               scale=4, min_width=160, allow_custom_value=True)
                    compare = gr.Button("Compare", size="sm", elem_id="compare", scale=1,
                                        min_width=80)
                    close_compare = gr.Button("Close", size="sm", elem_id="compare-close", scale=1,
                                              min_width=70)
                comparison = gr.HTML("", elem_id="comparison", js_on_load=COMPARE_SYNC_JS,
                                     padding=False)

        with gr.Column(elem_id="library"):
            with gr.Row(elem_id="projects-bar"):
                project = gr.Dropdown([], label="Project", elem_id="project", scale=3, min_width=160)
                project_name = gr.Textbox(label="Name", placeholder="New or new name",
                                          elem_id="project-name", scale=3, min_width=160)
                create_project = gr.Button("New project", size="sm", elem_id="project-create",
                                           scale=1, min_width=90)
                rename_project = gr.Button("Rename", size="sm", elem_id="project-rename", scale=1,
                                           min_width=80)
                delete_project = gr.Button("Delete project", size="sm", variant="stop",
                                           elem_id="project-delete", scale=1, min_width=110)
                export_project = gr.Button("Export project", size="sm", elem_id="project-export",
                                           scale=1, min_width=110)
                import_project = gr.UploadButton("Import project", size="sm", file_types=[".zip"],
                                                 elem_id="project-import", scale=1, min_width=110)
            export_file = gr.File(label="Project export (zip)", visible=False,
                                  elem_id="project-export-file", interactive=False)
            with gr.Row(visible=False, elem_id="project-delete-confirm") as project_confirm:
                gr.HTML('<p class="confirm-text">Delete this project, every take in it and their '
                        'files for good?</p>')
                project_yes = gr.Button("Delete the project", size="sm", variant="stop",
                                        elem_id="project-delete-yes", min_width=120)
                project_no = gr.Button("Keep it", size="sm", elem_id="project-delete-no",
                                       min_width=80)
            history = gr.Gallery(label="History", columns=6, height=300, allow_preview=False,
                                 object_fit="cover", elem_id="history")

        # -- mapping views onto components (the only place that knows both) ------------------------

        form_widgets = [widgets[name] for name in forms.FORM_FIELDS]
        names = {widget: name for name, widget in widgets.items()}
        take_out = [selected, video, details, favourite, share_url, share_image, revoke,
                    decode_again, group_box, group, group_ids, keep_only]
        history_out = [history, history_ids, compare_with]
        project_out = [project, project_id, last_project]
        form_out = [*form_widgets, lineage, status]
        slot_out = [errors[slot] for slot in forms.ERROR_SLOTS]

        def form_of(values: dict[Any, Any]) -> dict[str, Any]:
            return {names[widget]: value for widget, value in values.items() if widget in names}

        def take_outputs(view: TakeView) -> dict[Any, Any]:
            return {selected: view.take_id, video: view.video, details: view.details,
                    favourite: "★ Favourite" if view.favourite else "☆ Favourite",
                    share_url: view.share_url,
                    share_image: gr.update(value=view.share_image, visible=view.has_image),
                    revoke: gr.update(interactive=bool(view.share_url)),
                    decode_again: gr.update(visible=view.decodable),
                    group_box: gr.update(visible=view.group.visible),
                    group: gr.update(value=list(view.group.items), label=view.group.title),
                    group_ids: list(view.group.take_ids),
                    keep_only: gr.update(visible=view.in_batch and view.group.visible)}

        def history_outputs(view: HistoryView) -> dict[Any, Any]:
            return {history: view.items, history_ids: view.take_ids,
                    compare_with: gr.update(choices=view.finished)}

        def project_outputs(projects: ProjectList, chosen: int | None) -> dict[Any, Any]:
            return {project: gr.update(choices=projects.choices, value=projects.selected),
                    project_id: chosen, last_project: chosen}

        def fill_outputs(fill: FormFill) -> dict[Any, Any]:
            spec = get_variant(fill.values["variant"])
            out: dict[Any, Any] = {widgets[name]: fill.values.get(name) for name in forms.FORM_FIELDS}
            out[widgets["image"]] = gr.update(value=fill.values.get("image"), visible=spec.takes_image)
            out[widgets["guidance_low"]] = gr.update(value=fill.values.get("guidance_low"),
                                                     visible=spec.experts == 2)
            out[widgets["preset"]] = gr.update(choices=handlers.preset_choices(spec.id),
                                               value=fill.values.get("preset") or forms.NONE)
            out[widgets["image_fit"]] = gr.update(value=fill.values.get("image_fit") or "fit",
                                                  visible=spec.takes_image)
            out[widgets["end_image"]] = gr.update(value=fill.values.get("end_image"),
                                                  visible=spec.takes_last_image)
            out[lineage] = fill.lineage
            out[status] = message_html(fill.message)
            return out

        def render(event: TakeEvent, owner_key: str, project: int | None,
                   base: str | None) -> dict[Any, Any]:
            match event:
                case TakeQueued(take_id=take_id, position=position):
                    ahead = f": {position - 1} ahead of it" if position and position > 1 else ""
                    return {status: message_html(f"Take #{take_id} is queued{ahead}."),
                            preview: empty_preview_html("Waiting for a free worker…"),
                            progress: ""}
                case TakeStarted(take_id=take_id, total=total):
                    # the monitor and its actions (Cancel too) follow the take that runs now: in
                    # a batch of variations, each in turn
                    return {status: message_html(f"Take #{take_id} is running."),
                            preview: empty_preview_html("Loading the model, then the first "
                                                        "denoising step…"),
                            progress: progress_html(0, total, None, 0.0, None)} | take_outputs(
                        handlers.take_view(owner_key, take_id, base))
                case StepEvent():
                    return {progress: progress_html(event.index, event.total, event.expert,
                                                    event.elapsed_s, event.eta_s)}
                case PreviewImage():
                    return {preview: preview_html(event.webp, event.index, event.total, event.expert)}
                case DecodingEvent():
                    return {progress: progress_html(event.total, event.total, None, 0.0, 0.0,
                                                    phase="decoding")}
                case TakeFinished(take=take):
                    if take.status == "completed":
                        took = f" in {event.elapsed_s:.1f} s" if event.elapsed_s else ""
                        text, kind = f"Take #{take.id} done{took}. {event.message}".strip(), "done"
                    elif take.status == "cancelled":
                        text, kind = f"Take #{take.id}: {take.error or 'cancelled'}", "notice"
                    else:
                        text, kind = f"Take #{take.id} {take.status}: {take.error or event.message}", "error"
                    out = {status: message_html(text, kind), progress: ""}
                    return out | take_outputs(handlers.take_view(owner_key, take.id, base))
            return {status: gr.skip()}

        # -- wired functions -----------------------------------------------------------------------

        @user_errors
        def on_load(browser: str, last: Any, request: gr.Request,
                    profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
            page = handlers.load(browser, profile, last if isinstance(last, int) else None)
            # the monitor shows the take still running (then watched), else the newest one
            newest = page.unfinished or (page.history.take_ids[0] if page.history.take_ids else None)
            return {browser_key: page.browser_key, owner: page.owner,
                    **take_outputs(handlers.take_view(page.owner, newest, _base_url(request))),
                    **project_outputs(page.projects, page.project_id),
                    **history_outputs(page.history)}

        @user_errors
        def on_variant(variant: str) -> dict[Any, Any]:
            chosen = get_variant(variant)
            defaults = handlers.defaults(variant)
            values = forms.form_for_variant(variant, defaults)
            label = ("Start image (required)" if chosen.image_input == "required"
                     else "Start image (optional: animates it)")
            return {widgets["image"]: gr.update(visible=chosen.takes_image, label=label, value=None),
                    widgets["end_image"]: gr.update(visible=chosen.takes_last_image, value=None),
                    size_preset: gr.update(choices=forms.size_presets(variant, defaults),
                                           value=values["size_preset"]),
                    widgets["width"]: values["width"], widgets["height"]: values["height"],
                    frames_preset: gr.update(choices=forms.frame_presets(defaults),
                                             value=values["frames"]),
                    widgets["frames"]: values["frames"], widgets["steps"]: values["steps"],
                    widgets["guidance"]: values["guidance"],
                    widgets["guidance_low"]: gr.update(visible=chosen.experts == 2,
                                                       value=values["guidance_low"]),
                    widgets["flow_shift"]: values["flow_shift"],
                    widgets["preset"]: gr.update(choices=handlers.preset_choices(variant),
                                                 value=forms.NONE),
                    widgets["image_fit"]: gr.update(visible=chosen.takes_image)}

        def on_preset(preset: str) -> dict[Any, Any]:
            if not preset:
                return {widgets["steps"]: gr.skip()}
            from pipelines.presets import preset_form_values

            values = preset_form_values(preset)
            return {widgets[name]: values[name]
                    for name in ("steps", "guidance", "guidance_low", "flow_shift")}

        def on_compose(values: dict[Any, Any]) -> str:
            return handlers.compose(form_of(values))

        def on_size_preset(label: str) -> dict[Any, Any]:
            size = forms.parse_size(label)
            if size is None:  # "custom": keep what is typed
                return {widgets["width"]: gr.skip()}
            return {widgets["width"]: size[0], widgets["height"]: size[1]}

        def on_size_typed(width: Any, height: Any, current: str) -> Any:
            return gr.skip() if forms.parse_size(current) == (width, height) else forms.CUSTOM

        def on_frames_typed(frames: Any) -> Any:
            return frames if isinstance(frames, (int, float)) else gr.skip()

        @user_errors
        def on_check(values: dict[Any, Any]) -> dict[Any, Any]:
            check = handlers.check(form_of(values))
            out: dict[Any, Any] = {errors[slot]: "" for slot in forms.ERROR_SLOTS}
            for name in forms.FORM_FIELDS:
                out[widgets[name]] = gr.update(
                    elem_classes=["field-error"] if name == check.field else [])
            if check.message:
                out[errors[check.slot]] = message_html(check.message, "error")
                out[status] = message_html(check.message, "error")
            return out

        @user_errors
        def on_require(values: dict[Any, Any]) -> None:
            check = handlers.check(form_of(values))
            if check.message:
                raise gr.Error(check.message)

        @user_errors
        def on_submit(values: dict[Any, Any]) -> dict[Any, Any]:
            made = handlers.submit(values[owner], values[project_id], values[lineage],
                                   form_of(values))
            notices = " ".join(made.notices)
            queued = (f"Take #{made.take_id} is queued." if len(made.take_ids) < 2 else
                      f"{len(made.take_ids)} variations are queued: takes #{made.take_ids[0]} to "
                      f"#{made.take_ids[-1]}, one seed each.")
            return {selected: made.take_id, lineage: None,
                    status: message_html(f"{queued} {notices}".strip()),
                    **project_outputs(handlers.projects(values[owner], made.project_id),
                                      made.project_id),
                    **history_outputs(handlers.history(values[owner], made.project_id))}

        watching: dict[str, int] = {}  # session -> the take its monitor follows now

        @user_errors
        def on_watch(owner_key: str, take_id: int | None, project: int | None,
                     request: gr.Request) -> Iterator[dict[Any, Any]]:
            if not take_id:  # nothing to watch (a generator that yields nothing would blank
                yield {status: gr.skip()}  # every output)
                return
            session = getattr(request, "session_hash", None) or ""
            watching[session] = take_id  # a newer take of this page takes the monitor over
            base = _base_url(request)
            refreshed = 0.0
            for event in handlers.watch(take_id):
                if watching.get(session) != take_id:
                    return
                out = render(event, owner_key, project, base)
                now = time.monotonic()
                if (isinstance(event, (TakeQueued, TakeStarted, TakeFinished))
                        or now - refreshed > HISTORY_REFRESH_S):
                    refreshed = now
                    out |= history_outputs(handlers.history(owner_key, project))
                yield out
            if watching.get(session) == take_id:
                del watching[session]

        @user_errors
        def on_watch_unfinished(owner_key: str, take_id: int | None, project: int | None,
                                request: gr.Request) -> Iterator[dict[Any, Any]]:
            take = handlers.store.get_take(owner_key, take_id) if owner_key and take_id else None
            yield from on_watch(owner_key, take_id if take and not take.finished else None,
                                project, request)

        @user_errors
        def on_select(owner_key: str, ids: list[int], evt: gr.SelectData,
                      request: gr.Request) -> dict[Any, Any]:
            index = evt.index if isinstance(evt.index, int) else evt.index[0]
            return take_outputs(handlers.select_take(owner_key, ids, index, _base_url(request)))

        @user_errors
        def on_share(owner_key: str, take_id: int | None, include: bool,
                     request: gr.Request) -> dict[Any, Any]:
            return take_outputs(handlers.share(owner_key, take_id, include, _base_url(request)))

        @user_errors
        def on_share_image(owner_key: str, take_id: int | None, include: bool, link: str,
                           request: gr.Request) -> dict[Any, Any]:
            if not link:  # no live link yet: the choice applies when Share is pressed
                return {selected: gr.skip()}
            return take_outputs(handlers.share(owner_key, take_id, include, _base_url(request)))

        @user_errors
        def on_revoke(owner_key: str, take_id: int | None, request: gr.Request) -> dict[Any, Any]:
            view = handlers.revoke(owner_key, take_id, _base_url(request))
            return take_outputs(view) | {
                status: message_html("The link is revoked: it now shows a not-found page.", "notice")}

        @user_errors
        def on_favourite(owner_key: str, take_id: int | None, project: int | None,
                         request: gr.Request) -> dict[Any, Any]:
            view = handlers.toggle_favourite(owner_key, take_id, _base_url(request))
            return take_outputs(view) | history_outputs(handlers.history(owner_key, project))

        @user_errors
        def on_delete(owner_key: str, take_id: int | None, project: int | None) -> dict[Any, Any]:
            handlers.delete_take(owner_key, take_id)
            return (take_outputs(TakeView()) | history_outputs(handlers.history(owner_key, project))
                    | {delete_confirm: gr.update(visible=False)})

        @user_errors
        def on_remix(owner_key: str, take_id: int | None) -> dict[Any, Any]:
            return fill_outputs(handlers.remix(owner_key, take_id))

        @user_errors
        def on_continue(owner_key: str, take_id: int | None) -> dict[Any, Any]:
            return fill_outputs(handlers.continue_take(owner_key, take_id))

        @user_errors
        def on_extend(owner_key: str, take_id: int | None) -> dict[Any, Any]:
            return fill_outputs(handlers.extend(owner_key, take_id))

        @user_errors
        def on_keep_only(owner_key: str, take_id: int | None, project: int | None,
                         request: gr.Request) -> dict[Any, Any]:
            text = handlers.keep_only(owner_key, take_id)
            return (take_outputs(handlers.take_view(owner_key, take_id, _base_url(request)))
                    | history_outputs(handlers.history(owner_key, project))
                    | {status: message_html(text, "done")})

        @user_errors
        def on_compare(owner_key: str, take_id: int | None, other: Any) -> str:
            return handlers.compare(owner_key, take_id, other)

        @user_errors
        def on_improve(values: dict[Any, Any]) -> dict[Any, Any]:
            return {suggestion: handlers.improve_prompt(form_of(values)),
                    suggestion_box: gr.update(visible=True)}

        @user_errors
        def on_remix_link(request: gr.Request) -> dict[Any, Any]:
            token = (request.query_params.get("remix") if request is not None else None) or ""
            if not token:
                return {status: gr.skip()}
            fill = handlers.remix_from_link(token)
            if fill is None:
                return {status: message_html("That remix link no longer works.", "notice")}
            return fill_outputs(fill)

        @user_errors
        def on_decode_again(owner_key: str, take_id: int | None) -> dict[Any, Any]:
            queued = handlers.decode_again(owner_key, take_id)
            return {selected: queued, decode_again: gr.update(visible=False),
                    status: message_html(f"Take #{queued} is queued to decode its kept latents.")}

        @user_errors
        def on_cancel(owner_key: str, take_id: int | None) -> str:
            return handlers.cancel(owner_key, take_id)

        @user_errors
        def on_switch_project(owner_key: str, chosen: int | None) -> dict[Any, Any]:
            chosen = chosen or None
            return ({project_id: chosen, last_project: chosen}
                    | history_outputs(handlers.history(owner_key, chosen)) | take_outputs(TakeView()))

        @user_errors
        def on_create_project(owner_key: str, name: str) -> dict[Any, Any]:
            projects, chosen = handlers.create_project(owner_key, name)
            return (project_outputs(projects, chosen) | history_outputs(HistoryView([], []))
                    | take_outputs(TakeView()) | {project_name: ""})

        @user_errors
        def on_rename_project(owner_key: str, chosen: int | None, name: str) -> dict[Any, Any]:
            projects, renamed = handlers.rename_project(owner_key, chosen, name)
            return project_outputs(projects, renamed) | {project_name: ""}

        @user_errors
        def on_delete_project(owner_key: str, chosen: int | None) -> dict[Any, Any]:
            projects, remaining = handlers.delete_project(owner_key, chosen)
            return (project_outputs(projects, remaining)
                    | history_outputs(handlers.history(owner_key, remaining))
                    | take_outputs(TakeView()) | {project_confirm: gr.update(visible=False)})

        @user_errors
        def on_export(owner_key: str, chosen: int | None) -> dict[Any, Any]:
            return {export_file: gr.update(value=handlers.export_project(owner_key, chosen),
                                           visible=True)}

        @user_errors
        def on_import(owner_key: str, upload: Any) -> dict[Any, Any]:
            path = getattr(upload, "name", upload)
            projects, chosen = handlers.import_project(owner_key, path)
            return (project_outputs(projects, chosen) | history_outputs(handlers.history(owner_key, chosen))
                    | take_outputs(TakeView())
                    | {status: message_html("The project is imported: its takes are below.", "done")})

        def ask(row: Any) -> Any:
            return lambda: gr.update(visible=True)

        def dismiss(row: Any) -> Any:
            return lambda: gr.update(visible=False)

        # -- wiring --------------------------------------------------------------------------------
        # Dropdowns use .select (a user's pick): .input also fires on blur, which would reset
        # the settings whenever focus merely passes through.
        private = {"api_visibility": "private"}
        quick = {"queue": False, "show_progress": "hidden", **private}
        # a failed event marks its outputs with an error overlay that blocks them until their
        # next update; actions answer with a toast and the status line instead
        acts = {"show_progress": "hidden", **private}
        watch_args = dict(fn=on_watch, inputs=[owner, selected, project_id],
                          outputs=[status, preview, progress, *take_out, *history_out],
                          concurrency_limit=WATCHERS, concurrency_id="watch",
                          show_progress="hidden", **private)

        loaded = demo.load(on_load, [browser_key, last_project],
                           [browser_key, owner, *take_out, *project_out, *history_out], **private)
        loaded.then(**{**watch_args, "fn": on_watch_unfinished})  # watch a running take again
        if sign_in_note is not None:
            demo.load(user_errors(handlers.sign_in_note), None, sign_in_note, **private)
        widgets["variant"].select(
            on_variant, [widgets["variant"]],
            [widgets["image"], size_preset, widgets["width"], widgets["height"], frames_preset,
             widgets["frames"], widgets["steps"], widgets["guidance"], widgets["guidance_low"],
             widgets["flow_shift"], widgets["preset"], widgets["image_fit"], widgets["end_image"]],
            **quick)
        widgets["preset"].select(on_preset, widgets["preset"],
                                 [widgets[n] for n in ("steps", "guidance", "guidance_low",
                                                       "flow_shift")], **quick)
        gr.on([widgets[n].change for n in ("variant", "prompt", "image", *forms.CONTROL_FIELDS)]
              + [demo.load], on_compose, set(form_widgets), final_prompt, **quick)
        size_preset.select(on_size_preset, [size_preset], [widgets["width"], widgets["height"]],
                           **quick)
        gr.on([widgets["width"].input, widgets["height"].input], on_size_typed,
              [widgets["width"], widgets["height"], size_preset], size_preset, **quick)
        widgets["frames"].input(on_frames_typed, widgets["frames"], frames_preset, **quick)
        frames_preset.select(lambda chosen: chosen, frames_preset, widgets["frames"], **quick)
        seed_button.click(handlers.random_seed, None, widgets["seed"], **quick)

        checked = generate.click(on_check, set(form_widgets), [*slot_out, *form_widgets, status],
                                 **quick)
        # queued (unlike the check above), so its gr.Error shows as a toast too
        checked = checked.then(on_require, set(form_widgets), None, show_progress="hidden",
                               **private)
        submitted = checked.success(
            on_submit, {owner, project_id, lineage, *form_widgets},
            [selected, lineage, status, *project_out, *history_out],
            concurrency_limit=None, show_progress="hidden", api_name="ui_generate", **private)
        submitted.success(**watch_args)
        cancel.click(on_cancel, [owner, selected], status, api_name="ui_cancel", **quick)
        decode_again.click(on_decode_again, [owner, selected], [selected, decode_again, status],
                           **private).success(**watch_args)

        project.input(on_switch_project, [owner, project],
                      [project_id, last_project, *history_out, *take_out], **acts)
        create_project.click(on_create_project, [owner, project_name],
                             [*project_out, *history_out, *take_out, project_name], **acts)
        rename_project.click(on_rename_project, [owner, project_id, project_name],
                             [*project_out, project_name], **acts)
        delete_project.click(ask(project_confirm), None, project_confirm, **quick)
        project_no.click(dismiss(project_confirm), None, project_confirm, **quick)
        project_yes.click(on_delete_project, [owner, project_id],
                          [*project_out, *history_out, *take_out, project_confirm], **acts)

        export_project.click(on_export, [owner, project_id], export_file, **acts)
        import_project.upload(on_import, [owner, import_project],
                              [*project_out, *history_out, *take_out, status], **acts)
        history.select(on_select, [owner, history_ids], take_out, **acts)
        remix.click(on_remix, [owner, selected], form_out, **acts)
        continue_button.click(on_continue, [owner, selected], form_out, **acts)
        extend.click(on_extend, [owner, selected], form_out, **acts)
        group.select(on_select, [owner, group_ids], take_out, **acts)
        keep_only.click(on_keep_only, [owner, selected, project_id],
                        [*take_out, *history_out, status], **acts)
        compare.click(on_compare, [owner, selected, compare_with], comparison, **acts)
        close_compare.click(lambda: "", None, comparison, **quick)
        # a real language model takes seconds: the button says it is working meanwhile
        improve.click(lambda: gr.update(value="Improving…", interactive=False), None, improve,
                      **quick).then(on_improve, set(form_widgets), [suggestion, suggestion_box],
                                    **acts).then(
            lambda: gr.update(value="Improve prompt", interactive=True), None, improve, **quick)
        use_suggestion.click(lambda text: (text, gr.update(visible=False)), suggestion,
                             [widgets["prompt"], suggestion_box], **quick)
        drop_suggestion.click(lambda: gr.update(visible=False), None, suggestion_box, **quick)
        favourite.click(on_favourite, [owner, selected, project_id], [*take_out, *history_out],
                        **acts)
        delete.click(ask(delete_confirm), None, delete_confirm, **quick)
        delete_no.click(dismiss(delete_confirm), None, delete_confirm, **quick)
        delete_yes.click(on_delete, [owner, selected, project_id],
                         [*take_out, *history_out, delete_confirm], **acts)
        share.click(on_share, [owner, selected, share_image], take_out, **acts)
        share_image.input(on_share_image, [owner, selected, share_image, share_url], take_out,
                          **acts)
        revoke.click(on_revoke, [owner, selected], [*take_out, status], **acts)
        demo.load(on_remix_link, None, form_out, **private)

        register_api(handlers, GENERATION_SLOT, WATCHERS)
    return demo
