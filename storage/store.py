"""The storage operations the studio and its workers call: each opens and commits its own
transaction, so callers never hold a session (and never see an ORM row or SQL).

    store = Store(Database.open(data_dir))            # or Database.open(data_dir, url=...)
    take = store.submit_take(owner, project_id, recipe, image=path, max_unfinished=3)
    job = store.claim("host:pid", ["ti2v-5b"])        # a worker
    store.renew(job.id, "host:pid", step=3, total_steps=20)
    store.end(job.id, "host:pid", "completed", video=mp4, poster=jpg, recipe=finished)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import projects, queue, shares, takes
from .db import Database
from .errors import StorageError
from .media import Source
from .records import ProjectRecord, ShareLinkRecord, TakeRecord


class QueueFullError(StorageError):
    """The owner already has as many takes queued or running as the studio allows."""


class Store:
    """One database's operations, a transaction each."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Media ---------------------------------------------------------------------------------------

    def media_path(self, relative: str) -> Path:
        """The absolute path of a stored media file (MediaPathError for anything unsafe)."""
        return self.db.media.resolve(relative)

    def media_of(self, take: TakeRecord, kind: str) -> Path | None:
        """A take's video, poster, start or end image, kept latents or assembled shot on disk, or
        None when it has none or it is gone."""
        relative = {"video": take.video_path, "poster": take.poster_path,
                    "image": take.image_path, "end_image": take.end_image_path,
                    "latents": take.latents_path, "shot": take.shot_path}.get(kind)
        if not relative or not self.db.media.exists(relative):
            return None
        return self.db.media.resolve(relative)

    # Projects ------------------------------------------------------------------------------------

    def list_projects(self, owner: str, limit: int = 200) -> list[ProjectRecord]:
        """The owner's projects, newest first."""
        with self.db.read_session() as s, s.begin():
            return projects.list_projects(s, owner, limit=limit)

    def get_project(self, owner: str, project_id: int) -> ProjectRecord | None:
        """The owner's project, or None."""
        with self.db.read_session() as s, s.begin():
            return projects.get_project(s, owner, project_id)

    def default_project(self, owner: str) -> ProjectRecord | None:
        """The owner's most recently used project, or None for a newcomer (nothing is written)."""
        with self.db.read_session() as s, s.begin():
            return projects.get_default_project(s, owner)

    def project_for_write(self, owner: str, project_id: int | None) -> int:
        """The project a new take goes into: the given one (which must be the owner's), else the
        owner's default, made now: an owner's rows appear with their first write."""
        with self.db.session() as s, s.begin():
            if project_id:
                return projects.project_row_id(s, owner, project_id)
            return projects.get_or_create_default_project(s, owner).id

    def create_project(self, owner: str, name: str) -> ProjectRecord:
        """A new project; a name the owner already uses is refused."""
        with self.db.session() as s, s.begin():
            return projects.create_project(s, owner, name)

    def rename_project(self, owner: str, project_id: int, name: str) -> ProjectRecord:
        """The project under its new name; a name the owner already uses is refused."""
        with self.db.session() as s, s.begin():
            return projects.rename_project(s, owner, project_id, name)

    def delete_project(self, owner: str, project_id: int) -> None:
        """Delete a project with its takes, share links and files."""
        with self.db.session() as s, s.begin():
            projects.delete_project(s, owner, project_id)

    def move_owner(self, old: str, new: str) -> int:
        """Give owner `old`'s projects to owner `new`; returns how many moved."""
        with self.db.session() as s, s.begin():
            return projects.move_owner(s, old, new)

    # Takes ---------------------------------------------------------------------------------------

    def submit_take(self, owner: str, project_id: int, recipe: Mapping[str, Any],
                    image: Source | None = None, parent_id: int | None = None,
                    parent_kind: str | None = None, max_unfinished: int | None = None,
                    end_image: Source | None = None) -> TakeRecord:
        """Queue a take (its start and end images copied into the media store); QueueFullError when the
        owner already has `max_unfinished` takes queued or running. One write transaction, so two
        submissions at once cannot both slip under the cap."""
        with self.db.session() as s, s.begin():
            if max_unfinished is not None and queue.count_unfinished(s, owner) >= max_unfinished:
                takes_word = "take" if max_unfinished == 1 else "takes"
                raise QueueFullError(
                    f"You already have {max_unfinished} {takes_word} queued or running, the most "
                    "this studio allows; wait for one to finish or cancel one.")
            return takes.add_take(s, owner, project_id, recipe, parent_id=parent_id,
                                  parent_kind=parent_kind, image=image, end_image=end_image)

    def submit_batch(self, owner: str, project_id: int, recipes: Sequence[Mapping[str, Any]],
                     image: Source | None = None, max_unfinished: int | None = None,
                     end_image: Source | None = None) -> list[TakeRecord]:
        """Queue variations of one recipe as one batch (all or none); QueueFullError when they
        would take the owner over `max_unfinished` takes queued or running."""
        if not 2 <= len(recipes) <= 8:
            raise StorageError("A batch of variations holds 2 to 8 takes.")
        with self.db.session() as s, s.begin():
            if max_unfinished is not None:
                waiting = queue.count_unfinished(s, owner)
                if waiting + len(recipes) > max_unfinished:
                    raise QueueFullError(
                        f"{len(recipes)} more takes would make {waiting + len(recipes)} queued or "
                        f"running, and this studio allows {max_unfinished}; ask for fewer "
                        "variations or wait for some to finish.")
            first = takes.add_take(s, owner, project_id, recipes[0], image=image,
                                   end_image=end_image, starts_batch=True)
            made = [first]
            for recipe in recipes[1:]:
                made.append(takes.add_take(s, owner, project_id, recipe, image=image,
                                           end_image=end_image, batch_id=first.id))
            return made

    def batch(self, owner: str, batch_id: int) -> list[TakeRecord]:
        """The takes of a batch of variations, oldest first."""
        with self.db.read_session() as s, s.begin():
            return takes.batch_takes(s, owner, batch_id)

    def export_project(self, owner: str, project_id: int, zip_path: Path) -> Path:
        """Write the owner's project, takes and media to one zip."""
        from .transfer import export_project

        with self.db.read_session() as s, s.begin():
            return export_project(s, owner, project_id, zip_path)

    def import_project(self, owner: str, zip_path: Path) -> ProjectRecord:
        """A new project of the owner's from an export zip (a bad zip changes nothing)."""
        from .transfer import import_project

        with self.db.session() as s, s.begin():
            return import_project(s, owner, zip_path)

    def get_take(self, owner: str, take_id: int) -> TakeRecord | None:
        """The owner's take, or None."""
        with self.db.read_session() as s, s.begin():
            return takes.get_take(s, owner, take_id)

    def find_take(self, take_id: int) -> TakeRecord | None:
        """Any owner's take (signed media links, workers, operators), or None."""
        with self.db.read_session() as s, s.begin():
            return queue.find_take(s, take_id)

    def list_takes(self, owner: str, project_id: int, limit: int = 50,
                   offset: int = 0) -> list[TakeRecord]:
        """A page of the project's takes, newest first."""
        with self.db.read_session() as s, s.begin():
            return takes.list_takes(s, owner, project_id, limit=limit, offset=offset)

    def lineage(self, owner: str, take_id: int) -> list[TakeRecord]:
        """The take's ancestors, oldest first, the take last."""
        with self.db.read_session() as s, s.begin():
            return takes.lineage(s, owner, take_id)

    def set_favourite(self, owner: str, take_id: int, favourite: bool) -> TakeRecord:
        """Mark or unmark a favourite."""
        with self.db.session() as s, s.begin():
            return takes.set_favourite(s, owner, take_id, favourite)

    def delete_take(self, owner: str, take_id: int) -> None:
        """Delete a finished take with its share links and files."""
        with self.db.session() as s, s.begin():
            takes.delete_take(s, owner, take_id)

    def request_cancel(self, take_id: int, owner: str | None = None) -> TakeRecord:
        """Cancel a queued take now, or ask a running one to stop (owner None: an operator)."""
        with self.db.session() as s, s.begin():
            return queue.request_cancel(s, take_id, owner)

    def queue_positions(self, owner: str | None = None) -> dict[int, int]:
        """Queued takes' places in line (1 = next)."""
        with self.db.read_session() as s, s.begin():
            return queue.queue_positions(s, owner)

    def list_unfinished(self) -> list[TakeRecord]:
        """Every owner's queued and running takes, oldest first."""
        with self.db.read_session() as s, s.begin():
            return queue.list_unfinished(s)

    # Workers -------------------------------------------------------------------------------------

    def claim(self, worker: str, variants: Sequence[str] | None = None,
              lease_s: float = queue.LEASE_S) -> TakeRecord | None:
        """The next queued take for this worker, now running under its lease, or None."""
        with self.db.session() as s, s.begin():
            return queue.claim_next(s, worker, variants, lease_s=lease_s)

    def renew(self, take_id: int, worker: str, step: int | None = None,
              total_steps: int | None = None, lease_s: float = queue.LEASE_S) -> TakeRecord:
        """Renew the worker's lease (and record progress); the record carries cancel requests."""
        with self.db.session() as s, s.begin():
            return queue.renew_lease(s, take_id, worker, lease_s, step, total_steps)

    def end(self, take_id: int, worker: str, status: str, error: str | None = None,
            video: Source | None = None, poster: Source | None = None,
            recipe: Mapping[str, Any] | None = None, latents: Source | None = None) -> TakeRecord:
        """End the worker's take: completed with its files, failed (keeping latents a failed
        decode left, if given) or cancelled."""
        with self.db.session() as s, s.begin():
            return queue.end_claimed(s, take_id, worker, status, error=error, video=video,
                                     poster=poster, request=recipe, latents=latents)

    def set_shot(self, take_id: int, shot: Source) -> TakeRecord:
        """Store a completed extension's assembled shot (replacing any it had)."""
        with self.db.session() as s, s.begin():
            return takes.set_shot(s, take_id, shot)

    def decode_again(self, owner: str, take_id: int) -> TakeRecord:
        """Queue a failed take that kept its latents, to be decoded by a worker."""
        with self.db.session() as s, s.begin():
            return queue.requeue_decode(s, owner, take_id)

    def release_expired(self) -> tuple[list[int], list[int]]:
        """Queue again the takes of workers whose lease ran out; (queued again, interrupted)."""
        with self.db.session() as s, s.begin():
            return queue.release_expired(s)

    # Share links ---------------------------------------------------------------------------------

    def share(self, owner: str, take_id: int, include_image: bool = False) -> ShareLinkRecord:
        """The completed take's live share link (made now if it has none)."""
        with self.db.session() as s, s.begin():
            return shares.create_share_link(s, owner, take_id, include_image=include_image)

    def live_link(self, owner: str, take_id: int) -> ShareLinkRecord | None:
        """The take's live share link, if it has one."""
        with self.db.read_session() as s, s.begin():
            links = shares.list_share_links(s, owner, take_id)
        return next((link for link in links if link.active), None)

    def revoke(self, owner: str, token: str) -> ShareLinkRecord:
        """End one of the owner's share links."""
        with self.db.session() as s, s.begin():
            return shares.revoke_share_link(s, owner, token)

    def resolve_share(self, token: str) -> tuple[TakeRecord, ShareLinkRecord] | None:
        """What a share token opens, or None."""
        with self.db.read_session() as s, s.begin():
            return shares.resolve_share(s, token)

    # Upkeep --------------------------------------------------------------------------------------

    def takes_with_stored_paths(self) -> list[TakeRecord]:
        """Takes whose stored request still names a start image's path (older studios)."""
        with self.db.read_session() as s, s.begin():
            return takes.takes_with_stored_paths(s)

    def forget_stored_path(self, take_id: int) -> TakeRecord:
        """Drop the start image's path from a take's stored request."""
        with self.db.session() as s, s.begin():
            return takes.forget_stored_path(s, take_id)
