"""Initial schema: owners, projects, takes and share links.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_owners")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner"], ["owners.key"], ondelete="CASCADE",
                                name=op.f("fk_projects_owner_owners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("id", "owner", name=op.f("uq_projects_id_owner")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_projects_owner_created_at_id", "projects", ["owner", "created_at", "id"])
    op.create_table(
        "takes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("video_path", sa.String(255), nullable=True),
        sa.Column("poster_path", sa.String(255), nullable=True),
        sa.Column("image_path", sa.String(255), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("parent_kind", sa.String(16), nullable=True),
        sa.Column("favourite", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["project_id", "owner"], ["projects.id", "projects.owner"],
                                ondelete="CASCADE", name=op.f("fk_takes_project_id_owner_projects")),
        sa.ForeignKeyConstraint(["parent_id"], ["takes.id"], ondelete="SET NULL",
                                name=op.f("fk_takes_parent_id_takes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_takes")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_takes_project_id_id", "takes", ["project_id", "id"])
    op.create_index("ix_takes_status", "takes", ["status"])
    op.create_table(
        "share_links",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("take_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["take_id"], ["takes.id"], ondelete="CASCADE",
                                name=op.f("fk_share_links_take_id_takes")),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_share_links")),
    )
    op.create_index("ix_share_links_take_id", "share_links", ["take_id"])


def downgrade() -> None:
    op.drop_index("ix_share_links_take_id", table_name="share_links")
    op.drop_table("share_links")
    op.drop_index("ix_takes_status", table_name="takes")
    op.drop_index("ix_takes_project_id_id", table_name="takes")
    op.drop_table("takes")
    op.drop_index("ix_projects_owner_created_at_id", table_name="projects")
    op.drop_table("projects")
    op.drop_table("owners")
