"""Tenants can be deleted: ``tenants.deleted_at``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

The downgrade removes the deleted tenants and their keys before it drops the column. 0002 has
no way to say that a tenant is deleted or inactive: every row of ``tenants`` is a live tenant
(listed, its name taken, new keys given to it at once with its old limits), and every key
belongs to a tenant or is an admin key. Dropping ``deleted_at`` alone would bring the deleted
tenants back as live ones; setting their limits to something that admits nothing is no
state that 0002 writes or shows (its limits are positive or none). Their keys, revoked when
the tenant was deleted, go with them (the foreign key needs it); any one the deletion missed
goes too, so none comes back active. Usage records stay, every one: they name the tenant and
the key as text, not by foreign key, so totals by tenant and by key read as before. What is
lost is the deleted tenants' rows and their keys' names and dates, which a later upgrade does
not bring back; the tenant's name is free again, as it is after a deletion under 0003.
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

_DELETED = "SELECT id FROM tenants WHERE deleted_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("tenants", sa.Column("deleted_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Plain SQL, so an offline (--sql) downgrade writes it out too.
    op.execute(f"DELETE FROM api_keys WHERE tenant_id IN ({_DELETED})")
    op.execute("DELETE FROM tenants WHERE deleted_at IS NOT NULL")
    # SQLite has dropped columns in place since 3.35 (2021); a batch operation would rebuild
    # the table, which the keys' foreign key to it forbids
    op.drop_column("tenants", "deleted_at")
