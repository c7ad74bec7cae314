"""Authorization matrix: every route of the app x every kind of caller -> the expected status.

The routes are enumerated from the app at test time, so an endpoint added without a row here
fails `test_every_route_has_a_row`. Authorization does not depend on the database engine, so the
matrix runs on SQLite only (the protocol tests cover PostgreSQL).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, burn_in_job
from support.helpers import tiny_dataset_zip as dataset_zip
from support.world import PRINCIPALS, World, build_world, sqlite_settings_in

from scheduler.app import create_app
from scheduler.settings import Settings
from scheduler.web.auth import COOKIE_NAME

# Read by anyone: probes, scrapes and the API description.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/dashboard/login"),
    ("POST", "/dashboard/logout"),
}
# Signing out without the page's CSRF token (which only a signed-in page holds) is refused.
PUBLIC_OK = {"/dashboard/logout": 403}


@dataclass
class Call:
    """What one cell sends: a concrete path and an optional body or extra headers."""

    path: str
    json: Any = None
    content: bytes | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Where the caller's token goes: the Authorization header, the dashboard cookie, or the
    # dashboard's sign-in form.
    credential: str = "header"


Builder = Callable[[World], Call]


@dataclass
class Row:
    method: str
    template: str
    build: Builder
    expect: dict[str, int]


def _unauthenticated() -> dict[str, int]:
    return {"none": 401, "wrong": 401, "revoked": 401}


def admin_only(ok: int) -> dict[str, int]:
    """Team keys and the fleet token are forbidden; a worker token is no principal at all."""
    return {
        **_unauthenticated(),
        "other": 403,
        "own": 403,
        "fleet": 403,
        "worker": 401,
        "admin": ok,
    }


def team_resource(ok: int) -> dict[str, int]:
    """Alpha's resource: another team sees nothing (404); the fleet token is no user (403)."""
    return {
        **_unauthenticated(),
        "other": 404,
        "own": ok,
        "fleet": 403,
        "worker": 401,
        "admin": ok,
    }


def any_user(ok: int, *, admin: int | None = None) -> dict[str, int]:
    """Any team (on its own data) and the admin; `admin` overrides the admin's answer."""
    return {
        **_unauthenticated(),
        "other": ok,
        "own": ok,
        "fleet": 403,
        "worker": 401,
        "admin": ok if admin is None else admin,
    }


def worker_only(ok: int) -> dict[str, int]:
    """Only the registered worker's own token; everything else is not a worker (401)."""
    return {principal: 401 for principal in PRINCIPALS} | {"worker": ok}


def file_reader(ok: int) -> dict[str, int]:
    """Files of alpha: its team, the admin, or the worker; the fleet token sees nothing."""
    return {**team_resource(ok), "fleet": 404, "worker": ok}


def dashboard_page(ok: int, *, other: int | None = None) -> dict[str, int]:
    """Pages: no cookie redirects to sign-in (303); a bad token gets the sign-in page (401)."""
    refused = {p: 401 for p in ("wrong", "revoked", "fleet", "worker")}
    return {"none": 303, **refused, "own": ok, "admin": ok, "other": ok if other is None else other}


def dashboard_data(ok: int, *, other: int | None = None) -> dict[str, int]:
    """The pages' JSON: anything but a team or admin cookie is a 401."""
    return {**dashboard_page(ok, other=other), "none": 401}


def fixed(path: str, **extra: Any) -> Builder:
    return lambda w: Call(path.format(**_ids(w)), **extra)


def _ids(w: World) -> dict[str, str]:
    return {
        "team": "alpha",
        "job": w.running_job,
        "queued": w.queued_job,
        "worker": w.worker_id,
        "dataset": w.dataset_id,
        "artifact": w.artifact_name,
    }


def _fenced(verb: str, **body: Any) -> Builder:
    return lambda w: Call(
        f"/v1/workers/{w.worker_id}/jobs/{w.running_job}/{verb}", json={**w.lease, **body}
    )


def _energy(w: World) -> dict[str, Any]:
    return {
        "attempt": w.lease["attempt"],
        "started_at": "2026-03-02T09:00:00Z",
        "ended_at": "2026-03-02T09:01:00Z",
        "duration_s": 60.0,
        "gpus": [],
        "gpu_kwh": 0.0,
        "cpu_kwh": 0.001,
        "ram_kwh": 0.0001,
        "methods": {"gpu": "none", "cpu": "estimated", "ram": "estimated"},
        "timeline": [],
        "measurement_ok": True,
        "errors": [],
    }


def _finish(verb: str, **body: Any) -> Builder:
    def build(w: World) -> Call:
        return Call(
            f"/v1/workers/{w.worker_id}/jobs/{w.running_job}/{verb}",
            json={**w.lease, "energy": _energy(w), **body},
        )

    return build


def _upload_artifact(w: World) -> Call:
    data = b"adapter"
    return Call(
        f"/v1/jobs/{w.running_job}/artifacts/adapter.bin",
        content=data,
        headers={
            "X-Attempt": str(w.lease["attempt"]),
            "X-Lease-Token": w.lease["lease_token"],
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
    )


TARIFF = {"timezone": "Europe/Madrid", "default_price": 0.2, "windows": []}
BUDGET = {"period": "month", "limit_kg_co2e": 100.0}
WORKER = {"host": "gpu-new", "zone": "ES", "gpus": [], "cpu_only": True}

ROWS = [
    Row("POST", "/v1/teams", lambda w: Call("/v1/teams", json={"name": "gamma"}), admin_only(201)),
    Row("GET", "/v1/teams", fixed("/v1/teams"), admin_only(200)),
    Row("GET", "/v1/teams/{team}", fixed("/v1/teams/{team}"), team_resource(200)),
    Row("POST", "/v1/teams/{team}/keys", fixed("/v1/teams/{team}/keys"), admin_only(201)),
    Row(
        "DELETE",
        "/v1/teams/{team}/keys/{key_id}",
        lambda w: Call(f"/v1/teams/alpha/keys/{w.new_key_id()}"),
        admin_only(200),
    ),
    Row(
        "POST",
        "/v1/teams/{team}/webhook-secret",
        fixed("/v1/teams/{team}/webhook-secret"),
        admin_only(200),
    ),
    Row(
        "PUT",
        "/v1/teams/{team}/budget",
        fixed("/v1/teams/{team}/budget", json=BUDGET),
        admin_only(200),
    ),
    Row("GET", "/v1/teams/{team}/budget", fixed("/v1/teams/{team}/budget"), team_resource(200)),
    Row(
        "GET",
        "/v1/teams/{team}/budget/history",
        fixed("/v1/teams/{team}/budget/history"),
        team_resource(200),
    ),
    Row("GET", "/v1/teams/{team}/usage", fixed("/v1/teams/{team}/usage"), team_resource(200)),
    Row("GET", "/v1/teams/{team}/ledger", fixed("/v1/teams/{team}/ledger"), team_resource(200)),
    # The admin has no team to submit for: a named 422, not a job owned by nobody.
    Row("POST", "/v1/jobs", fixed("/v1/jobs", json=burn_in_job()), any_user(201, admin=422)),
    Row("GET", "/v1/jobs", fixed("/v1/jobs"), any_user(200)),
    Row("GET", "/v1/jobs/{job_id}", fixed("/v1/jobs/{queued}"), team_resource(200)),
    # A fresh job per call, so the second allowed cancel is not a cancel of a cancelled job.
    Row(
        "POST",
        "/v1/jobs/{job_id}/cancel",
        lambda w: Call(f"/v1/jobs/{w.submit()}/cancel"),
        team_resource(200),
    ),
    Row("GET", "/v1/jobs/{job_id}/events", fixed("/v1/jobs/{queued}/events"), team_resource(200)),
    Row("GET", "/v1/jobs/{job_id}/energy", fixed("/v1/jobs/{job}/energy"), team_resource(200)),
    Row(
        "GET", "/v1/jobs/{job_id}/telemetry", fixed("/v1/jobs/{job}/telemetry"), team_resource(200)
    ),
    Row("PUT", "/v1/jobs/{job_id}/artifacts/{name}", _upload_artifact, worker_only(201)),
    Row("GET", "/v1/jobs/{job_id}/artifacts", fixed("/v1/jobs/{job}/artifacts"), file_reader(200)),
    Row(
        "GET",
        "/v1/jobs/{job_id}/artifacts/{name}",
        fixed("/v1/jobs/{job}/artifacts/{artifact}"),
        file_reader(200),
    ),
    Row(
        "POST",
        "/v1/workers/register",
        fixed("/v1/workers/register", json=WORKER),
        {**admin_only(403), "fleet": 201},
    ),
    Row("GET", "/v1/workers", fixed("/v1/workers"), admin_only(200)),
    Row(
        "POST",
        "/v1/workers/{worker_id}/heartbeat",
        fixed("/v1/workers/{worker}/heartbeat", json={"gpu_watts": []}),
        worker_only(200),
    ),
    # Its one job is already running, so the worker's claim finds nothing: 204.
    Row(
        "POST",
        "/v1/workers/{worker_id}/claim",
        fixed("/v1/workers/{worker}/claim", json={}),
        worker_only(204),
    ),
    Row(
        "POST",
        "/v1/workers/{worker_id}/jobs/{job_id}/heartbeat",
        _fenced("heartbeat"),
        worker_only(200),
    ),
    Row(
        "POST",
        "/v1/workers/{worker_id}/jobs/{job_id}/complete",
        _finish("complete", result={}),
        worker_only(200),
    ),
    Row(
        "POST",
        "/v1/workers/{worker_id}/jobs/{job_id}/fail",
        _finish("fail", error="boom", retryable=False),
        worker_only(200),
    ),
    Row(
        "POST",
        "/v1/workers/{worker_id}/jobs/{job_id}/release",
        _finish("release", reason="shutdown"),
        worker_only(200),
    ),
    # The worker's attempt is live, not lost: a late report is refused, but only after auth.
    Row(
        "POST",
        "/v1/workers/{worker_id}/jobs/{job_id}/orphan-energy",
        _finish("orphan-energy"),
        worker_only(409),
    ),
    Row(
        "POST",
        "/v1/datasets",
        lambda w: Call("/v1/datasets", files={"file": ("v.zip", dataset_zip(), "application/zip")}),
        any_user(201, admin=422),
    ),
    Row("GET", "/v1/datasets", fixed("/v1/datasets"), any_user(200)),
    Row("GET", "/v1/datasets/{dataset_id}", fixed("/v1/datasets/{dataset}"), team_resource(200)),
    Row(
        "GET",
        "/v1/datasets/{dataset_id}/archive",
        fixed("/v1/datasets/{dataset}/archive"),
        # The worker's job does not train on this dataset: a worker reads only the inputs
        # of a job it holds a live lease on (tests/security/test_worker_data_access.py).
        {**file_reader(200), "worker": 404},
    ),
    Row("GET", "/v1/zones/{zone}/forecast", fixed("/v1/zones/ES/forecast"), any_user(200)),
    Row(
        "PUT", "/v1/zones/{zone}/tariff", fixed("/v1/zones/ES/tariff", json=TARIFF), admin_only(200)
    ),
    Row("GET", "/v1/zones/{zone}/tariff", fixed("/v1/zones/ES/tariff"), any_user(200)),
    Row(
        "POST",
        "/v1/plan/preview",
        fixed("/v1/plan/preview", json=burn_in_job()),
        any_user(200, admin=422),
    ),
    Row("GET", "/dashboard", fixed("/dashboard", credential="cookie"), dashboard_page(200)),
    Row(
        "GET",
        "/dashboard/budgets",
        fixed("/dashboard/budgets", credential="cookie"),
        dashboard_page(200),
    ),
    Row(
        "GET",
        "/dashboard/jobs/{job_id}",
        fixed("/dashboard/jobs/{queued}", credential="cookie"),
        dashboard_page(200, other=404),
    ),
    Row(
        "GET",
        "/dashboard/api/overview",
        fixed("/dashboard/api/overview", credential="cookie"),
        dashboard_data(200),
    ),
    Row(
        "GET",
        "/dashboard/api/budgets",
        fixed("/dashboard/api/budgets", credential="cookie"),
        dashboard_data(200),
    ),
    Row(
        "GET",
        "/dashboard/api/jobs/{job_id}",
        fixed("/dashboard/api/jobs/{queued}", credential="cookie"),
        dashboard_data(200, other=404),
    ),
    Row(
        "GET",
        "/dashboard/api/jobs/{job_id}/live",
        fixed("/dashboard/api/jobs/{queued}/live", credential="cookie"),
        dashboard_data(200, other=404),
    ),
    Row(
        "GET",
        "/dashboard/api/jobs/{job_id}/telemetry",
        fixed("/dashboard/api/jobs/{queued}/telemetry", credential="cookie"),
        dashboard_data(200, other=404),
    ),
    # Signing in: a missing token is a 422, a refused one the sign-in page again (401).
    Row(
        "POST",
        "/dashboard/login",
        fixed("/dashboard/login", credential="form"),
        {**dashboard_page(303), "none": 422},
    ),
] + [
    Row(
        method, path, fixed(path), {principal: PUBLIC_OK.get(path, 200) for principal in PRINCIPALS}
    )
    for method, path in sorted(PUBLIC)
]


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route, looking inside included routers."""
    found: set[tuple[str, str]] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):
                walk(route.effective_route_contexts())
            elif hasattr(route, "routes") and not hasattr(route, "methods"):
                walk(route.routes)
            else:
                # HEAD is Starlette's automatic twin of GET; the GET row covers it.
                for method in (getattr(route, "methods", None) or set()) - {"HEAD"}:
                    found.add((method, route.path))

    walk(app.routes)
    return found


@contextmanager
def _world(settings: Settings) -> Iterator[World]:
    app = create_app(settings, clock=FakeClock(), run_ticks=False)
    with TestClient(app) as client:
        world = build_world(client)
        client.put("/v1/teams/alpha/budget", json=BUDGET, headers=admin_headers())
        yield world


@pytest.fixture(scope="module")
def shared_world(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[World]:
    """One world for the rows that only read (building one takes about a second)."""
    with _world(sqlite_settings_in(tmp_path_factory.mktemp("authz"), sqlite_template)) as world:
        yield world


@pytest.fixture
def world(sqlite_settings: Settings) -> Iterator[World]:
    with _world(sqlite_settings) as world:
        yield world


def test_every_route_has_a_row(sqlite_settings: Settings) -> None:
    app = create_app(sqlite_settings, run_ticks=False)
    routes = app_routes(app)
    rows = {(row.method, row.template) for row in ROWS}
    assert routes - rows == set(), "routes without an authorization row"
    assert rows - routes == set(), "rows for routes that no longer exist"
    assert len(rows) == len(ROWS), "a route has two rows"


def test_every_row_names_every_principal() -> None:
    for row in ROWS:
        assert set(row.expect) == set(PRINCIPALS), (row.method, row.template)


def login_form_csrf(client: TestClient) -> str:
    """The sign-in form's CSRF token (its cookie stays in the client)."""
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard/login").text)
    assert match is not None
    return match.group(1)


def dashboard_session(client: TestClient, token: str) -> str | None:
    """Sign in through the form; the session cookie's value, or None if refused."""
    response = client.post(
        "/dashboard/login",
        data={"token": token, "csrf": login_form_csrf(client)},
        follow_redirects=False,
    )
    return client.cookies.get(COOKIE_NAME) if response.status_code == 303 else None


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.template}")
def test_authorization(request: pytest.FixtureRequest, row: Row) -> None:
    world: World = request.getfixturevalue("shared_world" if row.method == "GET" else "world")
    # Denied callers first, so the allowed ones meet the resources untouched.
    order = sorted(PRINCIPALS, key=lambda p: row.expect[p] < 300)
    mismatches = []
    for principal in order:
        call = row.build(world)
        token = world.headers(principal).get("Authorization", "").removeprefix("Bearer ")
        headers = dict(call.headers)
        cookies: dict[str, str] = {}
        form: dict[str, str] | None = None
        world.client.cookies.clear()
        if call.credential == "cookie" and token:
            # A session opened with the token; a token that opens none goes in the cookie
            # itself, as an old-style cookie holding a key would.
            cookies[COOKIE_NAME] = dashboard_session(world.client, token) or token
            world.client.cookies.clear()
        elif call.credential == "form":
            csrf = login_form_csrf(world.client)
            form = {"token": token, "csrf": csrf} if token else {"csrf": csrf}
        elif call.credential == "header":
            headers.update(world.headers(principal))
        response = world.client.request(
            row.method,
            call.path,
            json=call.json,
            content=call.content,
            files=call.files,
            data=form,
            headers=headers,
            cookies=cookies,
            follow_redirects=False,
        )
        if response.status_code != row.expect[principal]:
            mismatches.append(
                f"{principal}: expected {row.expect[principal]}, got {response.status_code} "
                f"{response.text[:200]}"
            )
        elif response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
            detail = response.json().get("detail")
            assert isinstance(detail, str) and detail.strip(), (principal, response.text)
        if response.status_code == 401 and call.credential == "header":
            assert response.headers.get("www-authenticate") == "Bearer", principal
    assert not mismatches, "\n".join(mismatches)


def test_revoked_key_worked_before_revocation(world: World) -> None:
    """The revoked cell means revocation, not a key that never worked."""
    fresh = world.client.post("/v1/teams/alpha/keys", headers=admin_headers()).json()
    headers = {"Authorization": f"Bearer {fresh['api_key']}"}
    assert world.client.get("/v1/jobs", headers=headers).status_code == 200
    world.client.delete(f"/v1/teams/alpha/keys/{fresh['key_id']}", headers=admin_headers())
    assert world.client.get("/v1/jobs", headers=headers).status_code == 401
