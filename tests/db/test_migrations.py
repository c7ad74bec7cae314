"""The schema after `upgrade head` equals the ORM metadata; `downgrade base` removes it all."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from scheduler.db.migrate import downgrade, upgrade
from scheduler.db.models import metadata


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_head_matches_models_and_downgrade_base_is_clean(database_url: str) -> None:
    # The fixture's database is already at head (cloned from a migrated template).
    assert _diff(database_url) == []
    assert _tables(database_url) == set(metadata.tables)
    downgrade(database_url, "base")
    assert _tables(database_url) == set()
    upgrade(database_url, "head")
    assert _diff(database_url) == []
