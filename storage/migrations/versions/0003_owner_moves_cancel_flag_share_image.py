"""Owner keys that can move, a cancel request any process can see, and an opt-in start image on
share pages.

Why: signed-in owner keys used to derive from a secret every visitor could read; the studio now
derives them from a server-only secret, so an account's rows must move to its new key in one
statement (ON UPDATE CASCADE from owners through projects to takes). A cancel asked for by an
operator (`app.py admin cancel`) or another process must reach the run, which reads its take row
every step. A share page shows the take's start image only when its owner chose to.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("fk_projects_owner_owners", type_="foreignkey")
        batch.create_foreign_key("fk_projects_owner_owners", "owners", ["owner"], ["key"],
                                 ondelete="CASCADE", onupdate="CASCADE")
    with op.batch_alter_table("takes", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("fk_takes_project_id_owner_projects", type_="foreignkey")
        batch.create_foreign_key("fk_takes_project_id_owner_projects", "projects",
                                 ["project_id", "owner"], ["id", "owner"],
                                 ondelete="CASCADE", onupdate="CASCADE")
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("share_links") as batch:
        batch.add_column(sa.Column("include_image", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("share_links") as batch:
        batch.drop_column("include_image")
    with op.batch_alter_table("takes", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("cancel_requested")
        batch.drop_constraint("fk_takes_project_id_owner_projects", type_="foreignkey")
        batch.create_foreign_key("fk_takes_project_id_owner_projects", "projects",
                                 ["project_id", "owner"], ["id", "owner"], ondelete="CASCADE")
    with op.batch_alter_table("projects", recreate="auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("fk_projects_owner_owners", type_="foreignkey")
        batch.create_foreign_key("fk_projects_owner_owners", "owners", ["owner"], ["key"],
                                 ondelete="CASCADE")
