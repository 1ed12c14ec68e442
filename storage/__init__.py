"""Storage: projects, takes and share links in SQLite, and the media files beside them.

Nothing here imports torch, diffusers or Gradio. Everything hangs off one data folder::

    data_dir/studio.db        SQLite (WAL), schema managed by Alembic (storage/migrations)
    data_dir/media/p<project id>/t<take id>/video-<32 hex>.mp4 | poster-<hex>.jpg | input-<hex>.png
    data_dir/studio.lock      held while open; only the holder recovers unfinished takes

Opening (creates the folder, checks the file, runs migrations, recovers interrupted takes)::

    from storage import Database, resolve_data_dir
    db = Database.open(resolve_data_dir(args.data_dir))   # explicit > $WAN_STUDIO_DATA > /data > ./data
    ...
    db.close()

Transactions belong to the caller. Sessions never autobegin, so always write::

    with db.session() as s, s.begin():          # writes (BEGIN IMMEDIATE: no "database is locked")
        project = get_or_create_default_project(s, owner)
        take = add_take(s, owner, project.id, request.to_dict(), image=upload_path)
    with db.read_session() as s, s.begin():     # read-only pages (deferred; never blocks writers)
        page = list_takes(s, owner, project.id, limit=50)

Repositories (storage.repositories, re-exported here) take the session first and the owner key
second, and return frozen records (`ProjectRecord`, `TakeRecord`, `ShareLinkRecord`), never ORM
objects. Another owner's project or take raises `NotFoundError` (mutations) or gives None (`get_*`),
exactly as a missing one does. Only `resolve_share_link(session, token)` crosses owners.

Owner keys: 1-256 printable characters, no spaces. Names: surrounding whitespace is trimmed; empty,
over 200 characters, control characters and bidi overrides are refused; everything else (emoji,
right-to-left text) is stored exactly.

Projects: `create_project(s, owner, name)`, `rename_project(s, owner, project_id, name)`,
`delete_project(s, owner, project_id)` (its media go after commit), `get_project(s, owner, id)`,
`list_projects(s, owner, limit=50, offset=0)` (newest first), `get_or_create_default_project(s, owner)`.

Takes: `add_take(s, owner, project_id, request: dict, parent_id=None, parent_kind=None, image=None)`
-> pending take (`image`: a file path or bytes, PNG/JPEG/WebP, copied into the media store);
`start_take(s, owner, take_id)` -> running; `update_progress(s, owner, take_id, step, total_steps)`;
`finish_take(s, owner, take_id, status, error=None, video=None, poster=None)` where status is
completed | failed | cancelled and `video`/`poster` are file paths or bytes (MP4; JPEG/PNG/WebP):
the files are written first, the row second, and the files are removed if the transaction rolls
back. `set_favourite`, `delete_take` (files removed after commit), `get_take(s, owner, take_id)`,
`list_takes(s, owner, project_id, limit=50, offset=0, favourites_only=False)` (newest first),
`lineage(s, owner, take_id)` (root ancestor first, the take last). A parent take must be the same
owner's (for a remix of someone else's shared take, pass no parent). A take or project with a take
still pending or running cannot be deleted (cancel first).
Statuses: pending -> running -> completed | failed | cancelled; pending -> failed | cancelled;
pending/running -> interrupted (only at start-up, by `Database.recover_interrupted`). Anything
else raises `TransitionError`.

Share links: `create_share_link(s, owner, take_id)` (completed takes only; returns the take's active
link if it has one, else a new token from secrets.token_urlsafe(32)),
`revoke_share_link(s, owner, token)`, `list_share_links(s, owner, take_id)`,
`resolve_share_link(s, token) -> TakeRecord | None` (None when unknown, malformed or revoked).

Media: `db.media` is the `MediaStore`; `db.media.resolve(record.video_path) -> Path` turns a stored
relative path into an absolute one inside the media folder, raising `MediaPathError` for anything
that would escape it (`../`, absolute, NUL, backslash, any symlink). File names are generated
(kind + 128 random bits + the suffix the content announces), never taken from users.
`TakeRecord.media_missing` is True when a file the row names is gone; the take still lists.

Export/import: `export_project(s, owner, project_id, zip_path) -> Path` and
`import_project(s, owner, zip_path) -> ProjectRecord` (storage.transfer).

Errors: every failure is a `StorageError` whose message is one sentence for the user; subclasses
`NotFoundError`, `InvalidInputError` (bad names, owners, pages, files), `TransitionError`,
`MediaPathError`.
"""

from __future__ import annotations

from .db import Database
from .errors import (
    DatabaseError,
    InvalidInputError,
    LeaseLostError,
    MediaPathError,
    NotFoundError,
    StorageError,
    TransitionError,
)
from .media import MediaStore
from .paths import resolve_data_dir
from .projects import (
    DEFAULT_PROJECT_NAME,
    create_project,
    delete_project,
    get_default_project,
    get_or_create_default_project,
    get_project,
    list_projects,
    move_owner,
    rename_project,
)
from .queue import (
    CANCELLED_BEFORE_START,
    LEASE_S,
    claim_next,
    count_unfinished,
    end_claimed,
    find_take,
    list_unfinished,
    queue_positions,
    release_expired,
    renew_lease,
    request_cancel,
)
from .records import ProjectRecord, ShareLinkRecord, TakeRecord, TakeStatus
from .shares import (
    create_share_link,
    list_share_links,
    resolve_share,
    resolve_share_link,
    revoke_share_link,
)
from .store import QueueFullError, Store
from .takes import (
    INTERRUPTED_MESSAGE,
    add_take,
    delete_take,
    finish_take,
    forget_stored_path,
    get_take,
    lineage,
    list_takes,
    set_favourite,
    set_shot,
    start_take,
    takes_with_stored_paths,
    update_progress,
)
from .transfer import export_project, import_project

__all__ = [
    "Database", "Store", "QueueFullError", "MediaStore", "resolve_data_dir",
    "StorageError", "DatabaseError", "NotFoundError", "LeaseLostError", "InvalidInputError", "TransitionError", "MediaPathError",
    "ProjectRecord", "TakeRecord", "ShareLinkRecord", "TakeStatus",
    "create_project", "rename_project", "delete_project", "get_project", "list_projects",
    "get_default_project", "get_or_create_default_project", "move_owner", "DEFAULT_PROJECT_NAME",
    "CANCELLED_BEFORE_START", "INTERRUPTED_MESSAGE",
    "add_take", "count_unfinished", "find_take", "request_cancel", "list_unfinished",
    "takes_with_stored_paths", "forget_stored_path",
    "LEASE_S", "claim_next", "renew_lease", "end_claimed", "release_expired", "queue_positions", "start_take", "update_progress", "finish_take", "set_favourite", "set_shot", "delete_take",
    "get_take", "list_takes", "lineage",
    "create_share_link", "revoke_share_link", "list_share_links", "resolve_share_link",
    "resolve_share",
    "export_project", "import_project",
]
