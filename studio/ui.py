"""The studio's Blocks: layout, elem_ids and event wiring (the logic lives in handlers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.prompting import VOCABULARY
from pipelines.request import DEFAULT_NEGATIVE_PROMPT
from pipelines.variants import get_variant

from . import forms, hosting
from .api import register_api
from .errors import user_errors
from .handlers import Handlers
from .progress_view import empty_preview_html

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
GENERATION_SLOT = "generation"  # one concurrency group shared by the UI and the API
# Generate handlers that may wait at once. The runner runs one take at a time; the handlers wait
# for it, so each take is stored (and counted against its owner's queue limit) when submitted.
GENERATION_HANDLERS = 16

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


class _Guarded:
    """The handlers as the UI calls them: every method's failures become sentences (errors.py)."""

    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._handlers, name)
        return user_errors(value) if callable(value) else value


def build_ui(handlers: Handlers) -> gr.Blocks:
    """Lay out the studio and wire every control to its handler."""
    plain = handlers
    handlers = _Guarded(plain)  # type: ignore[assignment]
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
                                      secret=plain.secrets.browser_state)
        # The owner key every handler uses: set on page load from the signed-in account or the
        # browser key, and kept server-side for the session (a client cannot change it).
        owner = gr.State("")
        project_id = gr.State(None)
        history_ids = gr.State([])
        selected = gr.State(None)
        current = gr.State(None)
        lineage = gr.State(None)

        with gr.Row(elem_id="topbar"):
            gr.HTML('<h1 class="studio-title">Wan Studio <span>Wan2.2 video</span></h1>')
            gr.HTML(handlers.weights_note(), elem_id="weights-note")
            sign_in_note = None
            if hosting.sign_in_enabled():  # needs the Space's OAuth app; absent elsewhere
                sign_in_note = gr.HTML("", elem_id="sign-in-note")
                gr.LoginButton(elem_id="sign-in", scale=0, min_width=200)
        history_note = handlers.history_note()
        if history_note:
            gr.HTML(history_note, elem_id="history-note")

        with gr.Row(elem_id="workspace", equal_height=False):
            with gr.Column(scale=5, min_width=360, elem_id="shot-panel"):
                widgets["variant"] = gr.Dropdown(handlers.variant_choices(), value=variant_id,
                                                 label="Model", elem_id="variant")
                errors["variant"] = _error_slot("variant")
                widgets["prompt"] = gr.Textbox(label="Shot", lines=3, elem_id="prompt",
                                               placeholder="Subject + scene + motion, e.g. a red "
                                               "ball rolls across a meadow")
                errors["prompt"] = _error_slot("prompt")
                widgets["image"] = gr.Image(label="Start image", type="filepath", height=160,
                                            visible=spec.takes_image, elem_id="image",
                                            sources=["upload", "clipboard"])
                errors["image"] = _error_slot("image")
                with gr.Tabs(elem_id="controls"):
                    for group, controls in CONTROL_GROUPS:
                        with gr.Tab(group, elem_classes=["control-group"]):
                            with gr.Row():
                                for name, label in controls:
                                    widgets[name] = gr.Dropdown(
                                        [("—", "")] + [(t, t) for t in VOCABULARY[name]], value="",
                                        label=label, elem_id=_elem(name), min_width=110)
                errors["controls"] = _error_slot("controls")
                final_prompt = gr.Textbox(label="Final prompt (sent and stored)", interactive=False,
                                          lines=2, max_lines=4, elem_id="final-prompt")
                with gr.Accordion("Settings", open=True, elem_id="settings"):
                    with gr.Row():
                        size_preset = gr.Dropdown(forms.size_presets(variant_id, defaults),
                                                  value=start["size_preset"], label="Size",
                                                  elem_id="size-preset", min_width=110)
                        widgets["width"] = gr.Number(start["width"], label="Width", precision=0,
                                                     elem_id="width",
                                                     min_width=80)
                        widgets["height"] = gr.Number(start["height"], label="Height", precision=0,
                                                      elem_id="height",
                                                      min_width=80)
                        frames_preset = gr.Dropdown(forms.frame_presets(defaults),
                                                    value=start["frames"], label="Frame preset",
                                                    elem_id="frames-preset", min_width=90)
                        widgets["frames"] = gr.Number(start["frames"], label="Frames (4n+1)",
                                                      precision=0, elem_id="frames",
                                                      min_width=80)
                    with gr.Row():
                        widgets["steps"] = gr.Number(start["steps"], label="Steps", precision=0,
                                                     elem_id="steps", min_width=70)
                        widgets["seed"] = gr.Number(-1, label="Seed (-1 random)", precision=0,
                                                    elem_id="seed", min_width=110)
                        seed_button = gr.Button("Random", elem_id="seed-random", min_width=70,
                                                scale=0, size="sm")
                        widgets["guidance"] = gr.Number(start["guidance"], label="Guidance high",
                                                        elem_id="guidance", min_width=80)
                        widgets["guidance_low"] = gr.Number(start["guidance_low"],
                                                            label="Guidance low",
                                                            visible=spec.experts == 2,
                                                            elem_id="guidance-low", min_width=80)
                        widgets["flow_shift"] = gr.Number(start["flow_shift"], label="Flow shift",
                                                          elem_id="flow-shift", min_width=70)
                    with gr.Accordion("Negative prompt (official default)", open=False):
                        widgets["negative_prompt"] = gr.Textbox(DEFAULT_NEGATIVE_PROMPT, lines=2,
                                                                show_label=False,
                                                                elem_id="negative-prompt")
                    errors["settings"] = _error_slot("settings")
                with gr.Row(elem_id="actions"):
                    generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)

            with gr.Column(scale=6, min_width=420, elem_id="monitor-panel"):
                preview = gr.HTML(empty_preview_html(), elem_id="preview")
                progress = gr.HTML("", elem_id="progress")
                video = gr.Video(label="Take", autoplay=True, loop=True, interactive=False,
                                 elem_id="video", height=260)
                with gr.Row(elem_id="take-actions"):
                    remix = gr.Button("Remix", size="sm", elem_id="remix")
                    continue_button = gr.Button("Continue", size="sm", elem_id="continue")
                    favourite = gr.Button("☆ Favourite", size="sm", elem_id="favourite")
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-take")
                with gr.Row(elem_id="share-bar"):
                    share = gr.Button("Share", size="sm", elem_id="share", scale=1)
                    share_url = gr.Textbox(label="Share link", interactive=False, buttons=["copy"],
                                           elem_id="share-url", scale=4)
                    revoke = gr.Button("Revoke", size="sm", elem_id="share-revoke", scale=1)
                share_image = gr.Checkbox(False, label="Show the start image on the share page",
                                          elem_id="share-image", container=False)
                details = gr.HTML("", elem_id="take-details")

        with gr.Column(elem_id="library"):
            with gr.Row(elem_id="projects-bar"):
                project = gr.Dropdown([], label="Project", elem_id="project", scale=3)
                project_name = gr.Textbox(label="Name", placeholder="New or new name",
                                          elem_id="project-name", scale=3)
                create_project = gr.Button("New project", size="sm", elem_id="project-create",
                                           scale=1)
                rename_project = gr.Button("Rename", size="sm", elem_id="project-rename", scale=1)
                delete_project = gr.Button("Delete project", size="sm", variant="stop",
                                           elem_id="project-delete", scale=1)
            history = gr.Gallery(label="History", columns=6, height=260, allow_preview=False,
                                 object_fit="cover", elem_id="history")

        form = [widgets[name] for name in forms.FORM_FIELDS]
        history_out = [history, history_ids]

        # -- load, variant and live prompt ----------------------------------------------
        # Dropdowns use .select (a user's pick): .input also fires on blur, which would reset
        # the settings whenever focus merely passes through.
        demo.load(handlers.load, [browser_key],
                  [browser_key, owner, project, history, history_ids, project_id],
                  api_visibility="private")
        if sign_in_note is not None:
            demo.load(handlers.sign_in_note, None, sign_in_note, api_visibility="private")
        widgets["variant"].select(
            handlers.switch_variant, [widgets["variant"]],
            [widgets["image"], size_preset, widgets["width"], widgets["height"], frames_preset,
             widgets["frames"],
             widgets["steps"], widgets["guidance"], widgets["guidance_low"], widgets["flow_shift"]],
            queue=False, api_visibility="private")
        gr.on([widgets[n].change for n in ("variant", "prompt", "image", *forms.CONTROL_FIELDS)]
              + [demo.load], handlers.compose, form, final_prompt, queue=False,
              show_progress="hidden", api_visibility="private")
        size_preset.select(handlers.apply_size_preset, [size_preset],
                           [widgets["width"], widgets["height"]], queue=False,
                           api_visibility="private")
        gr.on([widgets["width"].input, widgets["height"].input], handlers.size_label,
              [widgets["width"], widgets["height"], size_preset], size_preset, queue=False,
              show_progress="hidden", api_visibility="private")
        frames_preset.select(lambda n: n, frames_preset, widgets["frames"], queue=False,
                            api_visibility="private")
        seed_button.click(handlers.random_seed, None, widgets["seed"], queue=False,
                          api_visibility="private")

        # -- generate and cancel ------------------------------------------------------------
        error_slots = [errors[slot] for slot in forms.ERROR_SLOTS]
        checked = generate.click(handlers.field_errors, form, [*error_slots, *form], queue=False,
                                 show_progress="hidden", api_visibility="private")
        checked = checked.then(handlers.require_valid, form, None, queue=False,
                               show_progress="hidden", api_visibility="private")
        run = checked.success(
            handlers.generate, [owner, project_id, lineage, *form],
            [preview, progress, video, current, history, history_ids, project, project_id],
            concurrency_limit=GENERATION_HANDLERS, concurrency_id=GENERATION_SLOT,
            show_progress="full", show_progress_on=[video], api_name="ui_generate",
            api_visibility="private")  # the empty video area shows the queue position
        run.then(lambda: None, None, lineage, queue=False, api_visibility="private")
        cancel.click(handlers.cancel, [owner, current], progress, cancels=[run], queue=False,
                     api_name="ui_cancel", api_visibility="private")

        # -- projects and history -----------------------------------------------------------
        project.input(handlers.switch_project, [owner, project],
                      [history, history_ids, selected, details, project_id],
                      api_visibility="private")
        create_project.click(handlers.create_project, [owner, project_name],
                             [project, history, history_ids, project_name, project_id],
                             api_visibility="private")
        rename_project.click(handlers.rename_project, [owner, project_id, project_name],
                             [project, project_name, project_id], api_visibility="private")
        delete_project.click(handlers.delete_project, [owner, project_id],
                             [project, history, history_ids, selected, project_id],
                             api_visibility="private")
        history.select(handlers.select_take, [owner, history_ids],
                       [selected, video, details, favourite], api_visibility="private")
        remix.click(handlers.remix, [owner, selected], [*form, lineage, progress],
                    api_visibility="private")
        continue_button.click(handlers.continue_take, [owner, selected], [*form, lineage, progress],
                              api_visibility="private")
        favourite.click(handlers.toggle_favourite, [owner, selected, project_id],
                        [favourite, *history_out], api_visibility="private")
        delete.click(handlers.delete_take, [owner, selected, project_id],
                     [selected, video, details, *history_out], api_visibility="private")

        share.click(handlers.share, [owner, selected, share_image], share_url,
                    api_visibility="private")
        revoke.click(handlers.revoke, [owner, share_url], [share_url, progress],
                     api_visibility="private")
        demo.load(handlers.remix_from_link, None, [*form, lineage, progress],
                  api_visibility="private")

        register_api(plain, GENERATION_SLOT, GENERATION_HANDLERS)
    return demo
