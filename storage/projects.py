"""Projects and their owners: a Session in, frozen records out; the caller owns the transaction.

Another owner's project is reported exactly as a missing one (`NotFoundError`, or None).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from . import filehooks
from .errors import InvalidInputError, TransitionError
from .media import MediaStore
from .models import NAME_MAX, Owner, Project, Take, utcnow
from .records import UNFINISHED, ProjectRecord
from .rows import ensure_owner, project_record, project_row, take_count
from .validation import check_id, check_name, check_owner, check_page

DEFAULT_PROJECT_NAME = "My project"


def create_project(session: Session, owner: str, name: str) -> ProjectRecord:
    """A new, empty project named `name` (surrounding whitespace removed); a name the owner
    already uses (ignoring case) is refused."""
    owner, name = check_owner(owner), check_name(name)
    check_name_free(session, owner, name)
    ensure_owner(session, owner)
    now = utcnow()
    project = Project(owner=owner, name=name, created_at=now, updated_at=now)
    session.add(project)
    session.flush()
    return project_record(project, 0)


def rename_project(session: Session, owner: str, project_id: int, name: str) -> ProjectRecord:
    """The project under its new name."""
    name = check_name(name)
    project = project_row(session, owner, project_id)
    check_name_free(session, owner, name, but=project.id)
    project.name = name
    project.updated_at = utcnow()
    session.flush()
    return get_project(session, owner, project.id)  # type: ignore[return-value]


def check_name_free(session: Session, owner: str, name: str, but: int | None = None) -> None:
    """Refuse a project name the owner already uses for another project (ignoring case)."""
    query = select(Project.id).where(Project.owner == owner,
                                     func.lower(Project.name) == name.lower())
    if but is not None:
        query = query.where(Project.id != but)
    if session.scalar(query.limit(1)) is not None:
        raise InvalidInputError(f"You already have a project called {name!r}; choose another name.")


def unique_name(session: Session, owner: str, name: str) -> str:
    """`name`, or `name (2)`, `name (3)`... whichever the owner does not use yet."""
    taken = {n.lower() for n in session.scalars(select(Project.name).where(Project.owner == owner))}
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        suffix = f" ({number})"
        candidate = name[: NAME_MAX - len(suffix)] + suffix
    return candidate


def project_row_id(session: Session, owner: str, project_id: int) -> int:
    """The id of the owner's project (NotFoundError for another owner's or a missing one)."""
    return project_row(session, owner, project_id).id


def delete_project(session: Session, owner: str, project_id: int) -> None:
    """Delete a project, its takes and share links; its media folder goes once this commits."""
    project = project_row(session, owner, project_id)
    busy = session.scalar(select(func.count()).select_from(Take).where(
        Take.project_id == project.id, Take.status.in_([s.value for s in UNFINISHED])))
    if busy:
        raise TransitionError("This project has a take still generating; cancel it before deleting the project.")
    session.execute(delete(Project).where(Project.id == project.id))
    filehooks.remove_after_commit(session, MediaStore.project_relative(project.id))


def get_project(session: Session, owner: str, project_id: int) -> ProjectRecord | None:
    """The owner's project, or None."""
    owner, project_id = check_owner(owner), check_id(project_id, "project")
    row = session.execute(
        select(Project, take_count()).where(Project.id == project_id, Project.owner == owner)
    ).first()
    return None if row is None else project_record(row[0], row[1])


def list_projects(session: Session, owner: str, limit: int = 50, offset: int = 0) -> list[ProjectRecord]:
    """The owner's projects, newest first, one page."""
    owner = check_owner(owner)
    limit, offset = check_page(limit, offset)
    rows = session.execute(
        select(Project, take_count())
        .where(Project.owner == owner)
        .order_by(Project.created_at.desc(), Project.id.desc())
        .limit(limit).offset(offset)
    ).all()
    return [project_record(project, count) for project, count in rows]


def get_default_project(session: Session, owner: str) -> ProjectRecord | None:
    """The owner's most recently updated project, or None for an owner with none (reads write nothing)."""
    owner = check_owner(owner)
    row = session.execute(
        select(Project, take_count()).where(Project.owner == owner)
        .order_by(Project.updated_at.desc(), Project.id.desc()).limit(1)
    ).first()
    return None if row is None else project_record(row[0], row[1])


def get_or_create_default_project(session: Session, owner: str) -> ProjectRecord:
    """The owner's most recently updated project, creating "My project" for a new owner (a write)."""
    return get_default_project(session, owner) or create_project(session, owner, DEFAULT_PROJECT_NAME)


def move_owner(session: Session, old: str, new: str) -> int:
    """Give every project (and so every take) of owner `old` to owner `new`; returns how many moved.

    Used when an owner's key changes (a signed-in account's key derivation was rotated). The key
    changes on the owners row itself where `new` has none yet, and the foreign keys' ON UPDATE
    CASCADE carries it through projects and takes in the same statement.
    """
    old, new = check_owner(old), check_owner(new)
    if old == new or session.get(Owner, old) is None:
        return 0
    moved = session.scalar(select(func.count()).select_from(Project).where(Project.owner == old))
    if session.get(Owner, new) is None:
        session.execute(update(Owner).where(Owner.key == old).values(key=new))
    else:
        session.execute(update(Project).where(Project.owner == old).values(owner=new))
        session.execute(delete(Owner).where(Owner.key == old))
    session.expire_all()
    return int(moved or 0)
