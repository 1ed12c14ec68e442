"""A take can end on a chosen frame, and an extension keeps its assembled shot.

Why: first-last-frame generation (i2v-a14b's `last_image`) stores the end image beside the start
image; an extension ("extend") is assembled with its parent chain into one longer MP4 when it
completes, kept beside the take's own video.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("takes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("end_image_path", sa.String(255), nullable=True))
        batch.add_column(sa.Column("shot_path", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("takes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("shot_path")
        batch.drop_column("end_image_path")
