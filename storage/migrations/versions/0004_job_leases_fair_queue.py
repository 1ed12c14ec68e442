"""Takes are jobs: a worker claims one under a lease it renews, and owners take turns.

Why: a take must outlive the browser and the process that queued it. A worker (in the studio's
process or in `app.py worker` processes on other GPUs) claims the take whose owner has waited
longest, records itself and a lease it renews while running; a lease that runs out means the
worker died, and the take is queued again once (attempts), then marked interrupted.
On PostgreSQL ids and seeds become 64-bit, as SQLite's already are (seeds reach 2**32 - 1).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WIDE = (("projects", "id"), ("takes", "id"), ("takes", "project_id"), ("takes", "seed"),
         ("takes", "parent_id"), ("share_links", "take_id"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _WIDE:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    with op.batch_alter_table("owners") as batch:
        batch.add_column(sa.Column("last_served_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("takes") as batch:
        batch.add_column(sa.Column("worker", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("takes") as batch:
        batch.drop_column("attempts")
        batch.drop_column("lease_expires_at")
        batch.drop_column("worker")
    with op.batch_alter_table("owners") as batch:
        batch.drop_column("last_served_at")
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _WIDE:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
