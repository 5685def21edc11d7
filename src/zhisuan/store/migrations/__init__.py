"""Alembic migrations of the store, shipped inside the package.

``HEAD`` names the newest revision. :func:`zhisuan.store.upgrade` compares it with the
database's ``alembic_version`` to skip importing Alembic when nothing is to be done; a test
checks that it matches the newest file under ``versions/``, so bump it with every new revision.

Adding a revision (ids are sequential: ``0002``, ``0003`` …)::

    from alembic import command
    from zhisuan.store import alembic_config
    command.revision(alembic_config("sqlite:////tmp/x.db"), "add tenants",
                     autogenerate=True, rev_id="0002")
"""

from __future__ import annotations

HEAD = "0004"
