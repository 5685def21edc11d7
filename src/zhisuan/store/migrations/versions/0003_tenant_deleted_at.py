"""Tenants can be deleted: ``tenants.deleted_at``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from zhisuan.store.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("deleted_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # SQLite has dropped columns in place since 3.35 (2021); a batch operation would rebuild
    # the table, which the keys' foreign key to it forbids
    op.drop_column("tenants", "deleted_at")
