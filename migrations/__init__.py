"""Alembic environment and revisions (SQLite and PostgreSQL)."""
