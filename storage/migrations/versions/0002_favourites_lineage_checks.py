"""Index favourites and lineage, and let the database itself refuse impossible take rows.

Why: the "favourites only" history page walked every take of a project; deleting a take made
SQLite scan all takes to null their parent_id (ON DELETE SET NULL needs an index on the child
column); and a bad status, parent kind or negative step was only caught in Python.
The checks need a table rebuild on SQLite (batch mode), which must keep every row.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATUSES = ("pending", "running", "completed", "failed", "cancelled", "interrupted")


def upgrade() -> None:
    with op.batch_alter_table("takes", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.create_check_constraint("status", f"status IN {STATUSES!r}")
        batch.create_check_constraint(
            "parent_kind", "parent_kind IS NULL OR parent_kind IN ('remix', 'continue')")
        batch.create_check_constraint("step", "step >= 0")
    op.create_index("ix_takes_project_id_favourite_id", "takes", ["project_id", "favourite", "id"])
    op.create_index("ix_takes_parent_id", "takes", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_takes_parent_id", table_name="takes")
    op.drop_index("ix_takes_project_id_favourite_id", table_name="takes")
    with op.batch_alter_table("takes", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("step", type_="check")
        batch.drop_constraint("parent_kind", type_="check")
        batch.drop_constraint("status", type_="check")
