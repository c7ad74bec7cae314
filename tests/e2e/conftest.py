"""End-to-end tests run on the embedded default database (SQLite) only, to stay fast; the
PostgreSQL paths of the same endpoints are covered by the API tests in tests/workers/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    path = tmp_path / "greenwindow.db"
    shutil.copy(sqlite_template, path)
    yield f"sqlite:///{path}"
