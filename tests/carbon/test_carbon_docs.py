"""docs/carbon-providers.md lists, per provider and plan, each endpoint used and its source."""

from __future__ import annotations

from pathlib import Path

from scheduler.carbon.providers import electricitymaps, watttime

DOC = Path(__file__).resolve().parents[2] / "docs" / "carbon-providers.md"


def table_rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Endpoints per provider, plan and need", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def test_every_provider_and_plan_has_rows_with_a_source() -> None:
    rows = table_rows()
    pairs = {(row[0], row[1]) for row in rows}
    for pair in [
        ("Electricity Maps", "free"),
        ("Electricity Maps", "paid"),
        ("WattTime", "free"),
        ("WattTime", "paid"),
        ("UK CI (NESO)", "open (no key)"),
    ]:
        assert pair in pairs
    assert all(row[4] for row in rows), "every row names its documentation"


def test_every_endpoint_the_clients_call_is_listed() -> None:
    endpoints = " ".join(row[3] for row in table_rows())
    for path in (
        electricitymaps.LATEST,
        electricitymaps.HISTORY,
        electricitymaps.PAST_RANGE,
        electricitymaps.FORECAST,
        watttime.HISTORICAL,
        watttime.FORECAST,
        "/intensity/{from}/{to}",
        "/intensity/{from}/fw24h",
    ):
        assert path in endpoints, path
    assert "horizonHours" in endpoints and "co2_aoer" in endpoints
