"""Variations of one recipe are queued as a batch, and a take can extend another.

Why: a person tries seeds; N takes of one recipe with consecutive seeds are shown together and
one of them kept. Each take of a batch carries the id of the batch's first take. A longer shot
grows by extending a finished take from its last frame: lineage gains the kind "extend".

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("takes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                   nullable=True))
        batch.drop_constraint("parent_kind", type_="check")
        batch.create_check_constraint(
            "parent_kind", "parent_kind IS NULL OR parent_kind IN ('remix', 'continue', 'extend')")
    op.create_index("ix_takes_batch_id", "takes", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_takes_batch_id", table_name="takes")
    with op.batch_alter_table("takes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("parent_kind", type_="check")
        batch.create_check_constraint(
            "parent_kind", "parent_kind IS NULL OR parent_kind IN ('remix', 'continue')")
        batch.drop_column("batch_id")
