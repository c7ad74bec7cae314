"""Inputs that used to end in a 500 (or in stored non-JSON) get a 4xx naming the field."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from support.helpers import admin_headers, bearer, burn_in_job

FAR_OFFSET_DEADLINE = "9999-12-31T23:59:59-14:00"


def post_raw(client: TestClient, path: str, text: str, headers: dict[str, str]):  # noqa: ANN201
    """POST a body as written (Python's json module would refuse to write Infinity)."""
    return client.post(
        path, content=text.encode(), headers={**headers, "content-type": "application/json"}
    )


def test_usage_to_at_the_start_of_time_is_a_422_on_to(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    response = sqlite_client.get(
        "/v1/teams/alpha/usage", params={"to": "0001-01-02T00:00:00Z"}, headers=bearer(alpha_key)
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "to"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/plan/preview"])
def test_deadline_without_a_utc_equivalent_is_a_422_on_deadline(
    sqlite_client: TestClient, alpha_key: str, path: str
) -> None:
    body = burn_in_job(max_delay_minutes=None, deadline=FAR_OFFSET_DEADLINE)
    response = sqlite_client.post(path, json=body, headers=bearer(alpha_key))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "deadline"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/plan/preview"])
def test_deadlines_are_bounded_like_max_delay_minutes(
    sqlite_client: TestClient, alpha_key: str, path: str
) -> None:
    # The fake clock stands at 2026-03-02 09:00 UTC; the horizon is 31 days.
    too_far = burn_in_job(max_delay_minutes=None, deadline="2026-04-03T09:00:01Z")
    response = sqlite_client.post(path, json=too_far, headers=bearer(alpha_key))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "deadline" and "31 days" in response.json()["detail"]
    within = burn_in_job(max_delay_minutes=None, deadline="2026-04-02T09:00:00Z")
    accepted = sqlite_client.post(path, json=within, headers=bearer(alpha_key))
    assert accepted.status_code in (200, 201), accepted.text


def test_a_vanishing_budget_limit_is_refused_and_budgets_stay_json(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    budget = {"period": "month", "limit_kg_co2e": 5e-324, "mode": "hard"}
    response = sqlite_client.put("/v1/teams/alpha/budget", json=budget, headers=admin_headers())
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "limit_kg_co2e"
    smallest = {**budget, "limit_kg_co2e": 1e-9}
    assert (
        sqlite_client.put(
            "/v1/teams/alpha/budget", json=smallest, headers=admin_headers()
        ).status_code
        == 200
    )
    read = sqlite_client.get("/v1/teams/alpha/budget", headers=bearer(alpha_key))
    assert read.status_code == 200 and read.json()["limit_kg_co2e"] == 1e-9


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_in_a_job_config_are_a_422_naming_them(
    sqlite_client: TestClient, alpha_key: str, number: str
) -> None:
    body = (
        '{"name": "x", "kind": "gpt-sovits-finetune", "dataset": {"id": "d"}, '
        f'"config": {{"stage": "s1", "lora_alpha": {number}}}}}'
    )
    for path in ("/v1/jobs", "/v1/plan/preview"):
        response = post_raw(sqlite_client, path, body, bearer(alpha_key))
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "config"
        assert "config.lora_alpha must be a finite number" in response.json()["detail"]
    nested = json.dumps(burn_in_job()).replace('"steps": 50', '"steps": 50, "x": [1, Infinity]')
    response = post_raw(sqlite_client, "/v1/jobs", nested, bearer(alpha_key))
    assert response.status_code == 422 and "config.x.1" in response.json()["detail"]


def test_infinite_tariff_prices_are_refused(sqlite_client: TestClient) -> None:
    body = '{"timezone": "Europe/Madrid", "default_price": Infinity, "windows": []}'
    response = sqlite_client.put(
        "/v1/zones/ES/tariff",
        content=body.encode(),
        headers={**admin_headers(), "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "default_price"
