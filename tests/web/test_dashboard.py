"""Dashboard pages: sign-in, team scoping, and the same numbers as the API."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, admin_headers, bearer
from support.web_seed import (
    Seeded,
    gpu_telemetry,
    heartbeat,
    run_finetune,
    seed,
    start_running_job,
    telemetry_heartbeat,
    upload_dataset,
)

from scheduler.web import data
from scheduler.web.auth import COOKIE_NAME
from scheduler.web.format import fmt_co2e, fmt_number

PAGES = ["/dashboard", "/dashboard/budgets"]


def form_csrf(page: str) -> str:
    """The CSRF token a dashboard page's form carries."""
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, "the form has no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, token: str) -> None:
    """Sign in through the form, as a browser would."""
    form = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login",
        data={"token": token, "csrf": form_csrf(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"


@pytest.fixture
def seeded(client: TestClient, clock: FakeClock) -> Seeded:
    return seed(client, clock())


@pytest.mark.parametrize("path", PAGES + ["/dashboard/jobs/anything"])
def test_pages_without_a_token_go_to_the_login_form(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login?next=")
    form = client.get(response.headers["location"])
    assert form.status_code == 200
    assert '<form method="post" action="/dashboard/login">' in form.text
    assert f'name="next" value="{path}"' in form.text
    assert "page-data" not in form.text


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/api/overview",
        "/dashboard/api/budgets",
        "/dashboard/api/jobs/x/live",
        "/dashboard/api/jobs/x/telemetry",
    ],
)
def test_json_without_a_cookie_is_401(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401


def test_sign_in_keeps_a_session_id_in_an_httponly_cookie_never_the_token(
    client: TestClient, seeded: Seeded
) -> None:
    form = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login",
        data={"token": ADMIN_TOKEN, "csrf": form_csrf(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE_NAME))
    assert ADMIN_TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert ADMIN_TOKEN not in page.text
    assert "signed in as admin" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("token", [ADMIN_TOKEN, "not-a-token", WORKER_TOKEN])
def test_tokens_in_the_address_are_refused_and_not_echoed(client: TestClient, token: str) -> None:
    response = client.get(f"/dashboard?zone=ES&token={token}", follow_redirects=False)
    assert response.status_code == 400
    assert token not in response.text
    assert "not accepted in the address" in response.text
    assert COOKIE_NAME not in client.cookies
    assert client.get("/dashboard/api/budgets").status_code == 401


def test_login_form_sets_the_cookie_and_only_redirects_inside_the_dashboard(
    client: TestClient,
) -> None:
    csrf = form_csrf(client.get("/dashboard/login").text)
    bad = client.post(
        "/dashboard/login", data={"token": "wrong", "csrf": csrf}, follow_redirects=False
    )
    assert bad.status_code == 401
    csrf = form_csrf(bad.text)
    response = client.post(
        "/dashboard/login",
        data={"token": ADMIN_TOKEN, "next": "//evil.example/dashboard", "csrf": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    page = client.get("/dashboard/budgets")
    assert page.status_code == 200
    out = client.post(
        "/dashboard/logout", data={"csrf": form_csrf(page.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert client.get("/dashboard/budgets", follow_redirects=False).status_code == 303
    assert client.get("/dashboard/api/budgets").status_code == 401


def test_overview_shows_the_apis_forecast_and_jobs(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, ADMIN_TOKEN)
    view = client.get("/dashboard/api/overview?hours=12&history_hours=6").json()
    forecast = client.get(
        "/v1/zones/ES/forecast?hours=12&history_hours=6", headers=admin_headers()
    ).json()
    api_jobs = client.get("/v1/jobs", headers=admin_headers()).json()["items"]

    assert len(view["forecast"]) == len(forecast["points"]) > 0
    assert len(view["history"]) == len(forecast["history"]) > 0
    for ours, theirs in zip(view["forecast"], forecast["points"], strict=True):
        assert ours[1] == theirs["g_per_kwh"]
    assert view["source"] == forecast["source"]
    assert [j["id"] for j in view["jobs"]] == [j["id"] for j in api_jobs]
    for ours, theirs in zip(view["jobs"], api_jobs, strict=True):
        assert ours["estimated_kg_co2e"] == theirs["estimated_kg_co2e"]
        assert ours["state_reason"] == theirs["state_reason"]
    # Jobs holding a window, and jobs that ran, are drawn on the timeline.
    assert {j["name"] for j in view["timeline"]} == {
        "alpha-deferred",
        "beta-nightly",
        "alpha-urgent",
    }

    page = client.get("/dashboard").text
    for job in api_jobs:
        row = re.search(rf'<tr data-job-id="{job["id"]}" data-state="(\w+)">(.*?)</tr>', page, re.S)
        assert row is not None, job["name"]
        assert row.group(1) == job["state"]
        assert job["name"] in row.group(2)
        expected = fmt_co2e(job["estimated_kg_co2e"])
        assert f'data-field="estimated_kg_co2e">{expected}<' in row.group(2)


def test_a_team_key_sees_only_its_team(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, seeded.keys["alpha"])
    view = client.get("/dashboard/api/overview").json()
    assert {j["team"] for j in view["jobs"]} == {"alpha"}
    assert seeded.jobs["beta-nightly"] not in client.get("/dashboard").text
    budgets = client.get("/dashboard/api/budgets").json()
    assert [row["team"] for row in budgets["teams"]] == ["alpha"]
    assert "beta" not in client.get("/dashboard/budgets").text
    other = client.get(f"/dashboard/jobs/{seeded.jobs['beta-nightly']}")
    assert other.status_code == 404
    assert "beta-nightly" not in other.text
    assert client.get(f"/dashboard/api/jobs/{seeded.jobs['beta-nightly']}").status_code == 404
    assert client.get(f"/dashboard/jobs/{seeded.jobs['alpha-deferred']}").status_code == 200


def test_budgets_page_shows_the_apis_budget_figures(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, ADMIN_TOKEN)
    view = client.get("/dashboard/api/budgets").json()
    page = client.get("/dashboard/budgets").text
    assert [row["team"] for row in view["teams"]] == ["alpha", "beta"]
    for row in view["teams"]:
        api = client.get(f"/v1/teams/{row['team']}/budget", headers=admin_headers()).json()
        for field in (
            "limit_kg_co2e",
            "actual_kg_co2e",
            "committed_kg_co2e",
            "forecast_kg_co2e",
            "remaining_kg_co2e",
            "state",
        ):
            assert row["budget"][field] == api[field], field
        cells = re.search(rf'<tr data-team="{row["team"]}">(.*?)</tr>', page, re.S)
        assert cells is not None
        actual = fmt_co2e(api["actual_kg_co2e"])
        assert f'data-field="actual_kg_co2e">{actual}<' in cells.group(1)
    # alpha ran a job: its measured emissions are charged, so actual is above zero.
    assert view["teams"][0]["budget"]["actual_kg_co2e"] > 0


def test_job_page_shows_the_energy_report(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, ADMIN_TOKEN)
    job_id = seeded.jobs["alpha-urgent"]
    view = client.get(f"/dashboard/api/jobs/{job_id}").json()
    report = client.get(f"/v1/jobs/{job_id}/energy", headers=admin_headers()).json()
    events = client.get(f"/v1/jobs/{job_id}/events", headers=admin_headers()).json()
    assert view["energy"]["kwh"] == report["kwh"]
    assert view["energy"]["kg_co2e"] == report["kg_co2e"]
    assert len(view["energy"]["timeline"]) == len(report["timeline"]) == 24
    assert [e["to_state"] for e in view["events"]] == [e["to_state"] for e in events]
    page = client.get(f"/dashboard/jobs/{job_id}").text
    for part in ("gpu", "cpu", "ram"):
        row = re.search(rf'<tr data-component="{part}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'data-field="kwh">{fmt_number(report["kwh"][part])}<' in row.group(1)
    assert "succeeded" in page
    assert report["attempts"][0]["worker"] in page


def test_embedded_data_cannot_close_its_script_tag(client: TestClient) -> None:
    key = client.post("/v1/teams", json={"name": "gamma"}, headers=admin_headers()).json()
    hostile = "</script><script>alert(1)</script>"
    submitted = client.post(
        "/v1/jobs",
        json={"name": hostile, "kind": "burn-in", "config": {"steps": 5}},
        headers=bearer(key["api_key"]),
    )
    assert submitted.status_code == 201, submitted.text
    sign_in(client, ADMIN_TOKEN)
    page = client.get("/dashboard").text
    assert hostile not in page
    assert page.count("</script>") == page.count("<script")


def test_live_figures_need_a_session_and_stay_in_the_team(
    client: TestClient, seeded: Seeded
) -> None:
    running = start_running_job(client, seeded.keys["alpha"])
    assert client.get(f"/dashboard/api/jobs/{running.job_id}/live").status_code == 401
    sign_in(client, seeded.keys["beta"])
    assert client.get(f"/dashboard/api/jobs/{running.job_id}/live").status_code == 404
    assert client.get(f"/dashboard/api/jobs/{seeded.jobs['beta-nightly']}/live").status_code == 200


def test_live_figures_follow_the_heartbeats_as_the_api_reports_them(
    client: TestClient, seeded: Seeded
) -> None:
    running = start_running_job(client, seeded.keys["alpha"])
    sign_in(client, seeded.keys["alpha"])
    before = client.get(f"/dashboard/api/jobs/{running.job_id}/live").json()
    assert before["state"] == "running" and before["terminal"] is False
    assert before["max_steps"] == 50  # from the config until the worker reports its total
    assert before["warnings"] == []

    heartbeat(
        client,
        running,
        step=7,
        watts=212.5,
        kwh_so_far=0.004,
        events=[
            {"type": "warning", "message": "grad norm 812 at step 7"},
            {"type": "resumed", "message": "from step 5"},
        ],
    )
    live = client.get(f"/dashboard/api/jobs/{running.job_id}/live")
    assert live.headers["cache-control"] == "no-store"
    view = live.json()
    api = client.get(f"/v1/jobs/{running.job_id}", headers=bearer(seeded.keys["alpha"])).json()
    assert view["progress"]["step"] == api["progress"]["step"] == 7
    assert view["progress"]["total_steps"] == 50 and view["max_steps"] == 50
    assert view["live"]["watts"] == api["live"]["watts"] == 212.5
    assert view["live"]["kwh_so_far"] == pytest.approx(api["live"]["kwh_so_far"])
    assert view["live"]["kg_co2e_so_far"] == pytest.approx(api["live"]["kg_co2e_so_far"])
    # The worker's figure times the zone's PUE.
    assert view["live"]["kwh_so_far"] == pytest.approx(0.004 * view["live"]["pue"])
    # Only the warning is listed, not the other worker event.
    assert [w["reason"] for w in view["warnings"]] == ["worker warning: grad norm 812 at step 7"]

    # The page renders the same figures for a browser without scripts.
    page = client.get(f"/dashboard/jobs/{running.job_id}").text
    assert '<b data-live="step">7</b>' in page
    assert f'data-live="watts">{fmt_number(212.5)} W<' in page
    assert '<progress id="job-progress" max="50" value="7">' in page


def test_a_finished_job_has_no_live_figures(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, ADMIN_TOKEN)
    view = client.get(f"/dashboard/api/jobs/{seeded.jobs['alpha-urgent']}/live").json()
    assert view["state"] == "succeeded" and view["terminal"] is True
    assert view["live"] is None
    assert view["actual_kg_co2e"] is not None
    assert 'id="live"' not in client.get(f"/dashboard/jobs/{seeded.jobs['alpha-urgent']}").text


def test_telemetry_history_is_served_as_chart_series_with_its_warnings(
    client: TestClient, seeded: Seeded, clock: FakeClock
) -> None:
    running = start_running_job(client, seeded.keys["alpha"])
    for step, (allocated, reserved) in enumerate(
        [(12_000.0, 14_000.0), (12_100.0, 14_000.0), (2_000.0, 9_000.0)], start=1
    ):
        clock.advance(seconds=10)
        telemetry_heartbeat(
            client,
            running,
            step=step,
            loss=3.0 - step * 0.5,
            gpus=[
                gpu_telemetry(0, 0, torch_allocated_mib=allocated, torch_reserved_mib=reserved),
                gpu_telemetry(0, 1, util_pct=40.0 + step),
            ],
        )
    # A worker's own warning event is listed beside the health warnings.
    heartbeat(
        client,
        running,
        step=4,
        watts=200.0,
        kwh_so_far=0.001,
        events=[{"type": "warning", "message": "dataloader stalled"}],
    )
    sign_in(client, seeded.keys["alpha"])
    answer = client.get(f"/dashboard/api/jobs/{running.job_id}/telemetry")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    view = answer.json()
    api = client.get(
        f"/v1/jobs/{running.job_id}/telemetry", headers=bearer(seeded.keys["alpha"])
    ).json()
    assert view["attempt"] == api["attempt"] == 1 and view["attempts"] == [1]
    assert view["points"] == len(api["points"]) == 3
    assert view["gpus"] == view["gpus_shown"] == 2
    names = {chart: [s["name"] for s in series] for chart, series in view["charts"].items()}
    assert names["utilisation"] == ["GPU 0 util %", "GPU 1 util %"]
    assert names["memory"] == [
        "GPU 0 allocated MiB",
        "GPU 1 allocated MiB",
        "GPU 0 reserved MiB",
        "GPU 1 reserved MiB",
    ]
    assert names["loss"] == ["loss", "grad norm"]  # no KL or mel reported: no empty series
    utilisation = view["charts"]["utilisation"][1]["points"]
    assert [value for _, value in utilisation] == [41.0, 42.0, 43.0]
    assert [t for t, _ in utilisation] == [p["last_at"] for p in api["points"]]
    reserved = view["charts"]["memory"][2]["points"]
    assert [value for _, value in reserved] == [14_000.0, 14_000.0, 9_000.0]
    assert [value for _, value in view["steps"]] == [1, 2, 3]
    codes = [w["code"] for w in view["warnings"]]
    assert codes == ["memory_fragmentation", "worker"]
    assert view["warnings"][1]["message"] == "worker warning: dataloader stalled"
    # Health warnings are job events: the live view lists them too.
    live = client.get(f"/dashboard/api/jobs/{running.job_id}/live").json()
    assert any(w["reason"].startswith("health warning:") for w in live["warnings"])

    # An attempt without history is empty, not an error; a bad attempt names the field.
    other = client.get(f"/dashboard/api/jobs/{running.job_id}/telemetry?attempt=7").json()
    assert other["attempt"] == 7 and other["points"] == 0
    assert all(series == [] for series in other["charts"].values())
    bad = client.get(f"/dashboard/api/jobs/{running.job_id}/telemetry?attempt=0")
    assert bad.status_code == 422 and "attempt" in bad.text
    # Another team's job does not exist for this session.
    sign_in(client, seeded.keys["beta"])
    assert client.get(f"/dashboard/api/jobs/{running.job_id}/telemetry").status_code == 404


def test_telemetry_charts_stay_bounded(
    client: TestClient, seeded: Seeded, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "CHART_POINTS", 5)
    running = start_running_job(client, seeded.keys["alpha"])
    for step in range(1, 13):
        clock.advance(seconds=10)
        telemetry_heartbeat(
            client,
            running,
            step=step,
            gpus=[gpu_telemetry(rank, rank) for rank in range(8)],
        )
    sign_in(client, seeded.keys["alpha"])
    view = client.get(f"/dashboard/api/jobs/{running.job_id}/telemetry").json()
    assert view["stored_points"] == 12 and view["points"] == 5
    assert view["gpus"] == 8 and view["gpus_shown"] == data.CHART_GPUS
    assert len(view["charts"]["utilisation"]) == data.CHART_GPUS
    # Thinned evenly, keeping the first and the newest step.
    assert [step for _, step in view["steps"]] == [1, 4, 7, 9, 12]


def test_efficiency_is_compared_with_the_teams_median_and_the_expectation(
    client: TestClient, seeded: Seeded, clock: FakeClock
) -> None:
    dataset = upload_dataset(client, seeded.keys["alpha"])
    run_finetune(client, seeded.keys["alpha"], dataset, clock(), s1_kwh=0.004)
    clock.advance(seconds=900)
    run_finetune(client, seeded.keys["alpha"], dataset, clock(), s1_kwh=0.006)
    clock.advance(seconds=900)
    third = run_finetune(client, seeded.keys["alpha"], dataset, clock(), s1_kwh=0.0065)
    sign_in(client, seeded.keys["alpha"])
    view = client.get(f"/dashboard/api/jobs/{third}").json()
    report = view["energy"]
    assert report["team_baseline"]["jobs"] == 2
    rows = {(r["stage"], r["figure"]): r for r in view["efficiency"]["rows"]}
    s1 = rows[("s1", "kwh_per_optimizer_step")]
    assert s1["value"] == pytest.approx(0.0065 / 40)
    # The team's median of 0.004 and 0.006 kWh over 40 steps; learned: the mean of all three.
    assert s1["team_median"] == pytest.approx(0.005 / 40)
    assert s1["team_ratio"] == pytest.approx(1.3)
    assert s1["expected"] == pytest.approx(
        report["expected_efficiency"]["stages"]["s1"]["kwh_per_optimizer_step"]
    )
    assert s1["expected_ratio"] == pytest.approx(0.0065 / ((0.004 + 0.006 + 0.0065) / 3))
    assert rows[("s1", "wh_per_1k_samples")]["value"] == pytest.approx(6.5 / 0.32)
    assert rows[("s2", "kwh_per_audio_hour")]["team_ratio"] == pytest.approx(1.0)
    assert {stage for stage, _ in rows} == {"s1", "s2", "training"}

    page = client.get(f"/dashboard/jobs/{third}").text
    assert 'id="efficiency-table"' in page
    assert "1.3× the team&#39;s median" in page
    assert "kWh per training-audio hour" in page and "Wh per 1,000 samples" in page
    # The first run had nothing earlier to compare with.
    first_page = client.get(f"/dashboard/jobs/{seeded.jobs['alpha-urgent']}").text
    assert 'id="efficiency-empty"' in first_page


def test_efficiency_ratios_need_a_positive_reference() -> None:
    report = {
        "efficiency": {"stages": {"s1": {"kwh_per_optimizer_step": 0.2, "wh_per_1k_samples": 3}}},
        "team_baseline": {"jobs": 1, "stages": {"s1": {"kwh_per_optimizer_step": 0.0}}},
        "expected_efficiency": {"jobs": 0, "stages": {}},
    }
    rows = data.efficiency_comparison(report)["rows"]
    assert [r["figure"] for r in rows] == ["kwh_per_optimizer_step", "wh_per_1k_samples"]
    assert rows[0]["team_ratio"] is None and rows[0]["expected_ratio"] is None
