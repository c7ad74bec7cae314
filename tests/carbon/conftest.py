"""Fixtures for the carbon tests."""

from __future__ import annotations

import pytest
from support.carbon_fakes import FakeApi


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def sleeps() -> list[float]:
    """Pauses requested between retries; the list's `append` stands in for time.sleep."""
    return []
