"""Tenants have a weight in the replicas' queues: ``tenants.weight``.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-10

Every tenant there is gets weight 1, the share each had before: one request started per
turn. The downgrade drops the column, and with it every weight other than 1: 0003's queues
give each tenant one request per turn, which is what a tenant's row there means.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a default: SQLite and PostgreSQL fill the rows there are in place
    weight = sa.Column("weight", sa.Integer(), nullable=False, server_default=sa.text("1"))
    op.add_column("tenants", weight)


def downgrade() -> None:
    # SQLite drops a column in place since 3.35 (as 0003's downgrade does)
    op.drop_column("tenants", "weight")
