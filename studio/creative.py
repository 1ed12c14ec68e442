"""The studio's creative tools on a take: extend it into a longer shot, the group it belongs to
(a batch of variations, or the parts of a shot), keep one variation, compare two takes, and
improve a prompt with a local language model.

`CreativeActions` is a part of `studio.handlers.Handlers` (which supplies the store, the queue,
the view copies, the scratch space, the media signer and `_take`); it is kept apart so each file
reads in one sitting.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import gradio as gr

import storage
from storage.validation import MAX_PAGE
from pipelines.errors import RequestError
from pipelines.recipe import Recipe, file_sha256, recipe_differences
from pipelines.variants import continue_variant, get_variant

from . import forms
from .shots import shot_parts_of

if TYPE_CHECKING:
    from pipelines.prompt_helper import PromptHelper

    from .media_links import MediaSigner
    from .scratch import ScratchSpace
    from .views import ViewCopies

log = logging.getLogger(__name__)

# Compare plays both videos together: a play, pause, seek or speed change on one is copied to the
# other. Media events do not bubble, so the listeners capture them on the component's element.
COMPARE_SYNC_JS = """
let copying = false;
const videos = () => [...element.querySelectorAll('video.compare-video')];
const copy = (event) => {
  const source = event.target;
  if (copying || !(source instanceof HTMLVideoElement)) return;
  copying = true;
  for (const other of videos()) {
    if (other === source) continue;
    if (event.type === 'play') { other.currentTime = source.currentTime; other.play().catch(() => {}); }
    if (event.type === 'pause') other.pause();
    if (event.type === 'seeked' && Math.abs(other.currentTime - source.currentTime) > 0.04) other.currentTime = source.currentTime;
    if (event.type === 'ratechange') other.playbackRate = source.playbackRate;
  }
  setTimeout(() => { copying = false; }, 60);
};
for (const type of ['play', 'pause', 'seeked', 'ratechange']) element.addEventListener(type, copy, true);
element.addEventListener('click', (event) => {
  if (!event.target.closest('.compare-play')) return;
  copying = true;
  for (const video of videos()) { video.currentTime = 0; video.play().catch(() => {}); }
  setTimeout(() => { copying = false; }, 60);
});
"""


@dataclass(frozen=True)
class GroupView:
    """The takes the selected one belongs with: a batch of variations or a shot's parts."""

    kind: str = ""  # "variations", "shot" or "" (none)
    title: str = ""
    items: tuple[tuple[str, str], ...] = ()  # (image, caption) tiles
    take_ids: tuple[int, ...] = ()

    @property
    def visible(self) -> bool:
        """Whether there is a group worth showing (two takes or more)."""
        return len(self.take_ids) > 1


class CreativeActions:
    """Extend, variations, compare and the prompt helper (mixed into Handlers)."""

    store: storage.Store
    views: "ViewCopies"
    scratch: "ScratchSpace"
    signer: "MediaSigner"
    manager: Any
    prompt_helper: "PromptHelper | None"

    _take: Any  # (owner, take_id) -> the owner's TakeRecord or a gr.Error: Handlers' own
    _poster: Any  # (take) -> the tile image of a take: Handlers' own

    # -- longer shots ------------------------------------------------------------------------------

    def extend(self, owner: str, take_id: int | None) -> forms.FormFill:
        """The form for an extension: the take's recipe, its last frame as the start image, an
        image-taking variant (its own when it takes images); the lineage says "extend"."""
        from pipelines.video import last_frame

        take = self._take(owner, take_id)
        video = self.store.media_of(take, "video")
        if take.status != storage.TakeStatus.COMPLETED or video is None:
            raise gr.Error("Only a finished take with a video can be extended.")
        recipe = Recipe.from_dict(take.request)
        available = self.manager.available()
        variant_id = recipe.request.variant
        values = forms.form_from_recipe(recipe)
        if not get_variant(variant_id).takes_image or variant_id not in available:
            variant_id = continue_variant(available)
            # the shot keeps its size, length and steps; guidance and shift are the new model's
            switched = forms.form_for_variant(variant_id, self.manager.defaults_for(variant_id))
            values.update({name: switched[name]
                           for name in ("guidance", "guidance_low", "flow_shift")})
        image = self.scratch.new_file(".png")
        last_frame(video).save(image)
        values.update(variant=variant_id, image=str(image), end_image=None, seed=-1,
                      variations=1)
        return forms.FormFill(
            values, {"parent_id": take.id, "kind": "extend", "frame": file_sha256(image)},
            f"Extending take #{take.id} from its last frame with {variant_id}: keep the shot or "
            "say what happens next, then Generate. When it finishes, the parts are joined into "
            "one longer shot.")

    def hidden_parts(self, takes: list[storage.TakeRecord]) -> set[int]:
        """Takes the history shows inside a longer shot rather than on their own: parents of a
        listed extension whose shot was assembled."""
        return {take.parent_id for take in takes
                if take.parent_kind == "extend" and take.shot_path and take.parent_id}

    # -- the selected take's group -----------------------------------------------------------------

    def group_view(self, take: storage.TakeRecord) -> GroupView:
        """The batch of variations, or the shot's parts, that a take belongs to."""
        if take.shot_path:
            parts = shot_parts_of(self.store, take)
            items = tuple((self._poster(part), f"part {index} · #{part.id}")
                          for index, part in enumerate(parts, start=1))
            return GroupView("shot", f"Shot of {len(parts)} parts (each part's own take)", items,
                             tuple(part.id for part in parts))
        if take.batch_id:
            batch = self.store.batch(take.owner, take.batch_id)
            items = tuple((self._poster(member), f"#{member.id} {_state(member)} · seed "
                           f"{member.seed}") for member in batch)
            return GroupView("variations", f"Variations ({len(batch)} seeds): pick one to keep, "
                             "remix or extend", items, tuple(member.id for member in batch))
        return GroupView()

    def keep_only(self, owner: str, take_id: int | None) -> str:
        """Delete the other finished takes of the selected take's batch; returns what was done."""
        take = self._take(owner, take_id)
        if not take.batch_id:
            raise gr.Error("This take is not one of a batch of variations.")
        others = [member for member in self.store.batch(owner, take.batch_id) if member.id != take.id]
        # never lost by this button: takes still running, favourites, and takes something grew
        # from (a remix, a continuation, the start of a longer shot)
        grown_from = {t.parent_id for t in self.store.list_takes(owner, take.project_id,
                                                                 limit=MAX_PAGE)}
        kept = {member.id: why for member in others if (why := _kept_because(member, grown_from))}
        for member in others:
            if member.id not in kept:
                self.store.delete_take(owner, member.id)
        removed = len(others) - len(kept)
        text = f"Kept take #{take.id}; deleted {removed} other variation{'s' * (removed != 1)}."
        if kept:
            text += " Also kept: " + "; ".join(f"#{i} ({why})" for i, why in kept.items()) + "."
        return text

    # -- compare -----------------------------------------------------------------------------------

    def compare(self, owner: str, take_id: int | None, other_id: Any) -> str:
        """Two finished takes side by side (played together) and the fields that differ."""
        first = self._take(owner, take_id)
        text = str(other_id if other_id is not None else "")
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise gr.Error("Pick a take to compare the selected one with.")
        second = self._take(owner, int(other_id))
        if first.id == second.id:
            raise gr.Error("Pick a different take: a take compared with itself has no differences.")
        for take in (first, second):
            if take.status != storage.TakeStatus.COMPLETED or self.store.media_of(take, "video") is None:
                raise gr.Error(f"Take #{take.id} has no video to compare; pick a finished take.")
        differences = recipe_differences(Recipe.from_dict(first.request),
                                         Recipe.from_dict(second.request))
        rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(a)}</td>"
                       f"<td>{html.escape(b)}</td></tr>" for label, a, b in differences)
        table = (f'<table class="compare-diff"><tr><th>Differs</th><th>#{first.id}</th>'
                 f'<th>#{second.id}</th></tr>{rows}</table>' if rows
                 else '<p class="compare-same">Their recipes are the same (the same settings and '
                      'seed).</p>')
        players = "".join(
            f'<figure><video class="compare-video" data-take="{take.id}" '
            f'src="{html.escape(self.signer.url(take.id, "video"))}" muted loop playsinline '
            f'controls preload="auto"></video><figcaption>#{take.id}</figcaption></figure>'
            for take in (first, second))
        return (f'<div class="compare" data-takes="{first.id},{second.id}">'
                f'<div class="compare-head"><b>Take #{first.id} and take #{second.id}</b>'
                f'<button type="button" class="compare-play">Play both from the start</button>'
                f'</div><div class="compare-videos">{players}</div>{table}</div>')

    # -- prompt helper -----------------------------------------------------------------------------

    def improve_prompt(self, form: Mapping[str, Any]) -> str:
        """The prompt model's rewrite of the form's shot (RequestError naming the field)."""
        if self.prompt_helper is None:
            raise RequestError("No prompt model is configured; start the studio with "
                               "--prompt-model FOLDER to use Improve prompt.", "prompt")
        controls = forms.controls_from_form(form)
        image = forms.image_mode(str(form.get("variant") or ""), form.get("image"))
        return self.prompt_helper.improve(str(form.get("prompt") or ""), controls, image)


def _kept_because(take: storage.TakeRecord, grown_from: set[int | None]) -> str:
    """Why "Keep only this one" leaves a sibling alone ("" when it may go)."""
    if not take.finished:
        return "still queued or running"
    if take.favourite:
        return "a favourite"
    if take.id in grown_from:
        return "other takes grew from it"
    return ""


def _state(take: storage.TakeRecord) -> str:
    from .handlers import STATUS_LABELS

    return STATUS_LABELS.get(str(take.status), str(take.status))
