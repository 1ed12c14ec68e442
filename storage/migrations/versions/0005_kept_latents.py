"""A failed decode's latents are kept beside the take.

Why: on a real GPU the final VAE decode can run out of memory after minutes of denoising. The
engine keeps the denoised latents; storing them beside the take lets "decode again" finish it
later (with tiling or a smaller profile) instead of denoising from scratch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("takes") as batch:
        batch.add_column(sa.Column("latents_path", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("takes") as batch:
        batch.drop_column("latents_path")
