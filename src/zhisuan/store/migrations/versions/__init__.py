"""Alembic revision files (one module per revision; see ``zhisuan.store.migrations``)."""
