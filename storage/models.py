"""ORM tables (SQLAlchemy 2 typed style). Repositories turn rows into frozen records."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .records import TakeStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

OWNER_MAX = 256
NAME_MAX = 200
TOKEN_MAX = 64
WORKER_MAX = 128
MEDIA_PATH_MAX = 255
STATUSES = tuple(status.value for status in TakeStatus)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite itself keeps naive text)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("Datetimes given to storage must carry a timezone.")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


def dump_json(value: Any) -> str:
    """The one way storage writes JSON: compact text, keys sorted, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


# Ids and seeds are 64-bit everywhere: SQLite's INTEGER already is (and an INTEGER PRIMARY KEY
# must stay INTEGER to be the rowid), PostgreSQL's INTEGER is not (seeds reach 2**32 - 1).
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention Alembic relies on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Owner(Base):
    """An opaque owner key: an anonymous browser key or a signed-in user name."""

    __tablename__ = "owners"

    key: Mapped[str] = mapped_column(String(OWNER_MAX), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When a worker last took one of this owner's takes: the queue serves the owner whose turn
    # is oldest first (round robin across owners, not first come first served).
    last_served_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Project(Base):
    """A named collection of takes belonging to one owner."""

    __tablename__ = "projects"
    # AUTOINCREMENT: ids (and so media folder names) are never reused after a delete.
    __table_args__ = (
        UniqueConstraint("id", "owner"),
        Index("ix_projects_owner_created_at_id", "owner", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    owner: Mapped[str] = mapped_column(
        String(OWNER_MAX), ForeignKey("owners.key", ondelete="CASCADE", onupdate="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Take(Base):
    """One generation: the full request, its status and progress, and its media paths."""

    __tablename__ = "takes"
    __table_args__ = (
        # The take's owner can never disagree with its project's owner.
        ForeignKeyConstraint(["project_id", "owner"], ["projects.id", "projects.owner"],
                             ondelete="CASCADE", onupdate="CASCADE"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        CheckConstraint("parent_kind IS NULL OR parent_kind IN ('remix', 'continue', 'extend')",
                        name="parent_kind"),
        CheckConstraint("step >= 0", name="step"),
        Index("ix_takes_project_id_id", "project_id", "id"),
        Index("ix_takes_project_id_favourite_id", "project_id", "favourite", "id"),
        Index("ix_takes_status", "status"),
        Index("ix_takes_parent_id", "parent_id"),
        Index("ix_takes_batch_id", "batch_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(Id)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    variant: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(Id)
    prompt: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    video_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))
    poster_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))
    image_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))
    end_image_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))  # first-last frame
    # an extension's whole shot (its parent chain and itself in one MP4), made when it completes
    shot_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))
    # a failed decode's final latents: the take can be decoded again without denoising again
    latents_path: Mapped[str | None] = mapped_column(String(MEDIA_PATH_MAX))
    # variations of one recipe queued together share the id of the batch's first take
    batch_id: Mapped[int | None] = mapped_column(Id)
    parent_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("takes.id", ondelete="SET NULL"))
    parent_kind: Mapped[str | None] = mapped_column(String(16))
    favourite: Mapped[bool] = mapped_column(default=False)
    # Set by whoever asks a take to stop (its owner, an operator, another process); the run
    # reads it with each step's progress write.
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The worker running it and until when its lease holds; a worker renews the lease while it
    # runs, so an expired lease means the worker died and the take goes back to the queue.
    worker: Mapped[str | None] = mapped_column(String(WORKER_MAX))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ShareLink(Base):
    """An unguessable token that opens one take read-only until it is revoked."""

    __tablename__ = "share_links"
    __table_args__ = (Index("ix_share_links_take_id", "take_id"),)

    token: Mapped[str] = mapped_column(String(TOKEN_MAX), primary_key=True)
    take_id: Mapped[int] = mapped_column(Id, ForeignKey("takes.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    include_image: Mapped[bool] = mapped_column(default=False, server_default=false())  # start image on the page
