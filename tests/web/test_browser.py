"""The dashboard in a real headless Chromium: pages load without console errors and the
charts are drawn with data. Screenshots go to the test's tmp dir.

Needs the `playwright` Python package and Debian's `chromium` at /usr/bin/chromium (the
browser Playwright would download is not used). Locally they are skipped when missing;
under CI=true a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, serve_in_thread
from support.web_seed import (
    Seeded,
    gpu_telemetry,
    heartbeat,
    report,
    run_finetune,
    seed,
    start_running_job,
    telemetry_heartbeat,
    upload_dataset,
)

from scheduler.app import create_app
from scheduler.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _require_browser() -> Any:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed (pip install playwright)"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run: {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path, clock: FakeClock) -> Iterator[tuple[str, Seeded]]:
    """A real uvicorn server on a seeded SQLite database, on the test's clock."""
    database = tmp_path / "greenwindow.db"
    shutil.copy(sqlite_template, database)
    settings = Settings(
        database_url=f"sqlite:///{database}",
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        worker_token=WORKER_TOKEN,
    )
    with serve_in_thread(create_app(settings, clock=clock, run_ticks=False)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            seeded = seed(client, clock())
        yield url, seeded


@pytest.fixture
def browser_page(live: tuple[str, Seeded]) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page that records console errors and uncaught exceptions."""
    sync_playwright = _require_browser()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # Chromium also logs a violation to the console; this keeps the directive too.
            page.add_init_script(
                "window.cspViolations = [];"
                "document.addEventListener('securitypolicyviolation', e =>"
                " window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
            )
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


def _points(page: Any, selector: str) -> int:
    page.wait_for_selector(f"{selector}[data-points]", timeout=10_000)
    return int(page.get_attribute(selector, "data-points"))


def _series(page: Any, selector: str) -> list[str]:
    """The series names a chart drew, as it recorded them and as uPlot's legend shows them."""
    return (page.get_attribute(selector, "data-series") or "").split("|")


def _legend(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(f"{selector} .u-legend .u-series th").all_inner_texts()]


def _painted(page: Any, selector: str) -> int:
    """How many pixels of the chart's canvas are drawn on: a chart that drew nothing is 0."""
    return int(
        page.evaluate(
            """(selector) => {
                const canvas = document.querySelector(selector + " canvas");
                const ctx = canvas.getContext("2d");
                const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
                return painted;
            }""",
            selector,
        )
    )


def _csp_violations(page: Any) -> list[str]:
    return page.evaluate("window.cspViolations || []")


def test_every_page_renders_its_charts_without_errors(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    url, seeded = live
    page, errors = browser_page

    page.goto(f"{url}/dashboard")
    assert page.locator("form[action='/dashboard/login']").count() == 1
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    assert _points(page, "#intensity-chart") > 40
    assert _series(page, "#intensity-chart") == ["observed", "forecast"]
    assert _legend(page, "#intensity-chart") == ["time", "observed", "forecast"]
    assert int(page.get_attribute("#intensity-chart", "data-bands")) >= 2
    assert _painted(page, "#intensity-chart") > 5_000
    assert _points(page, "#job-timeline") == 3  # two planned windows and one finished run
    assert json.loads(page.get_attribute("#job-timeline", "data-shapes")) == {
        "planned": 2,
        "done": 1,
    }
    assert _painted(page, "#job-timeline") > 1_000
    assert page.locator("#jobs-table tbody tr").count() == 3
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    page.goto(f"{url}/dashboard/budgets")
    assert _points(page, "#budget-chart") == 4  # actual and committed, for two teams
    assert json.loads(page.get_attribute("#budget-chart", "data-marks")) == {
        "forecast": 2,
        "limit": 2,
    }
    assert _painted(page, "#budget-chart") > 1_000
    # Burn over the period: actual and actual + committed for each team, and the limit line.
    assert _series(page, "#burn-chart") == [
        "alpha: actual + committed",
        "alpha: actual",
        "beta: actual + committed",
        "beta: actual",
        "limit",
    ]
    assert _painted(page, "#burn-chart") > 1_000
    page.screenshot(path=str(tmp_path / "budgets.png"), full_page=True)

    page.goto(f"{url}/dashboard/jobs/{seeded.jobs['alpha-urgent']}")
    assert _points(page, "#power-chart") == 24
    assert _points(page, "#job-intensity-chart") == 24
    assert _points(page, "#energy-chart") == 3
    assert _series(page, "#energy-chart") == ["gpu", "cpu", "ram"]
    assert _painted(page, "#power-chart") > 5_000
    # A finished job has nothing live to poll.
    assert page.locator("#live").count() == 0
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    assert errors == []
    assert _csp_violations(page) == []
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("overview.png", "job.png"))


def test_the_gwchart_library_is_gone_and_uplot_is_served_with_its_licence(
    live: tuple[str, Seeded],
) -> None:
    url, _ = live
    with httpx.Client(base_url=url) as client:
        assert client.get("/dashboard/static/gwchart.js").status_code == 404
        script = client.get("/dashboard/static/uPlot.iife.min.js")
        assert script.status_code == 200 and "uPlot" in script.text
        assert "MIT License" in client.get("/dashboard/static/uPlot.LICENSE").text


def test_a_team_key_opens_that_teams_view(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]]
) -> None:
    url, seeded = live
    page, errors = browser_page
    page.goto(f"{url}/dashboard")
    page.fill("#token", seeded.keys["beta"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    assert seeded.keys["beta"] not in page.content()
    assert _points(page, "#intensity-chart") > 0
    assert page.locator("#jobs-table tbody tr").count() == 1
    assert "beta-nightly" in page.inner_text("#jobs-table")
    # The cookie is HttpOnly: scripts on the page cannot read the key.
    assert page.evaluate("document.cookie") == ""
    # Signing out from the page (its form carries the CSRF token) ends the session.
    page.click("form[action='/dashboard/logout'] button")
    page.wait_for_url(f"{url}/dashboard/login")
    page.goto(f"{url}/dashboard")
    assert page.url.startswith(f"{url}/dashboard/login")
    assert errors == []


def test_a_running_jobs_page_follows_its_heartbeats_without_a_reload(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]], clock: FakeClock, tmp_path: Path
) -> None:
    url, seeded = live
    page, errors = browser_page
    expect = _expect()
    with httpx.Client(base_url=url, timeout=30) as client:
        running = start_running_job(client, seeded.keys["alpha"])
        heartbeat(client, running, step=3, watts=180.0, kwh_so_far=0.001)

        page.goto(f"{url}/dashboard/jobs/{running.job_id}")
        page.fill("#token", seeded.keys["alpha"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/dashboard/jobs/{running.job_id}")
        assert page.inner_text('#live [data-live="step"]') == "3"
        assert page.inner_text('#live [data-live="watts"]') == "180 W"
        assert page.get_attribute("#job-progress", "max") == "50"
        assert _points(page, "#power-chart") == 1  # the heartbeat's reading
        page.evaluate("window.sameDocument = true")

        clock.advance(seconds=30)
        heartbeat(
            client,
            running,
            step=9,
            watts=240.0,
            kwh_so_far=0.003,
            events=[{"type": "warning", "message": "loss is not finite at step 8"}],
        )
        # Playwright's own waiting runs outside the page, so the page's CSP does not apply.
        expect(page.locator('#live [data-live="step"]')).to_have_text("9", timeout=20_000)
        # Updated in place: the page was not reloaded.
        assert page.evaluate("window.sameDocument") is True
        assert page.inner_text('#live [data-live="watts"]') == "240 W"
        assert page.evaluate("document.getElementById('job-progress').value") == 9
        assert "kWh" in page.inner_text('#live [data-live="kwh"]')
        assert "loss is not finite at step 8" in page.inner_text("#warnings")
        assert _points(page, "#power-chart") == 2  # the new reading appended to the chart
        assert _painted(page, "#power-chart") > 1_000
        page.screenshot(path=str(tmp_path / "running.png"), full_page=True)

        # When the job ends, the page shows its final report and stops polling.
        clock.advance(seconds=30)
        done = client.post(
            f"/v1/workers/{running.worker_id}/jobs/{running.job_id}/complete",
            json={**running.fence, "energy": report(clock(), 60, 200.0), "result": {}},
            headers=running.headers,
        )
        assert done.status_code == 200, done.text
        expect(page.locator("#live")).to_have_count(0, timeout=20_000)
        assert "succeeded" in page.inner_text("h1")
    assert errors == []
    assert _csp_violations(page) == []


def test_live_telemetry_of_any_shape_is_drawn_as_text(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]]
) -> None:
    """The page draws whatever telemetry a job read carries, per GPU or not. The live answer
    is rewritten in flight here to a worker's hostile, odd-shaped telemetry: nothing in it may
    become markup, and the page must keep working."""
    url, seeded = live
    page, errors = browser_page
    hostile = "<img src=x onerror=alert(1)>"
    with httpx.Client(base_url=url, timeout=30) as client:
        running = start_running_job(client, seeded.keys["alpha"])
        heartbeat(client, running, step=4, watts=300.0, kwh_so_far=0.002)

    def with_telemetry(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        body["telemetry"] = {
            "step_time_s": 0.412,
            "grad_norm": 3.5,
            "note": hostile,
            "gpus": [
                {"index": 0, "util_percent": 97, "mem_used_mib": 20480, "temp_c": 71, "watts": 288},
                {"index": 1, "util_percent": 12, "name": hostile},
            ],
            "host": {"load": 1.5},
            "odd": [1, 2, 3],
        }
        body["live"]["gpu_watts"] = [{"index": 0, "watts": 288.0}, {"index": 1, "watts": 61.5}]
        route.fulfill(response=answer, json=body)

    page.route("**/dashboard/api/jobs/*/live", with_telemetry)
    page.goto(f"{url}/dashboard/jobs/{running.job_id}")
    page.fill("#token", seeded.keys["alpha"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard/jobs/{running.job_id}")
    _expect()(page.locator("table.telemetry[data-telemetry='gpus'] tbody tr")).to_have_count(
        2, timeout=20_000
    )
    headers = page.locator("table.telemetry th").all_text_contents()
    assert headers[:5] == ["index", "util percent", "mem used mib", "temp c", "watts"]
    assert "name" in headers
    assert page.inner_text("[data-telemetry='step_time_s']") == "0.41"
    assert page.inner_text("[data-telemetry='host.load']") == "1.5"
    assert page.inner_text("[data-telemetry='odd']") == "[1,2,3]"
    assert page.inner_text("[data-telemetry='note']") == hostile  # shown as text
    assert page.locator("#telemetry img").count() == 0
    assert page.inner_text('#live [data-live="gpu-watts"]') == "GPU 0: 288 W · GPU 1: 62 W"
    assert errors == []
    assert _csp_violations(page) == []


def test_a_jobs_telemetry_history_is_charted_with_its_warnings(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]], clock: FakeClock, tmp_path: Path
) -> None:
    """Heartbeats with telemetry (two GPUs, a fragmenting allocator) become the job page's
    charts; the health warning is marked on them and listed, a worker's hostile warning text
    stays text."""
    url, seeded = live
    page, errors = browser_page
    expect = _expect()
    hostile = "<img src=x onerror=alert(1)>"
    with httpx.Client(base_url=url, timeout=30) as client:
        running = start_running_job(client, seeded.keys["alpha"])
        for step, (allocated, reserved) in enumerate(
            [(12_000.0, 14_000.0), (12_100.0, 14_100.0), (2_000.0, 9_000.0)], start=1
        ):
            clock.advance(seconds=20)
            telemetry_heartbeat(
                client,
                running,
                step=step,
                loss=3.0 - step * 0.4,
                grad_norm=1.0 + step,
                gpus=[
                    gpu_telemetry(0, 0, torch_allocated_mib=allocated, torch_reserved_mib=reserved),
                    gpu_telemetry(0, 1, util_pct=50.0 + step, temp_c=60.0 + step),
                ],
            )
        heartbeat(
            client,
            running,
            step=4,
            watts=300.0,
            kwh_so_far=0.002,
            events=[{"type": "warning", "message": hostile}],
        )

    page.goto(f"{url}/dashboard/jobs/{running.job_id}")
    page.fill("#token", seeded.keys["alpha"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard/jobs/{running.job_id}")
    assert _points(page, "#tele-utilisation") == 6  # two GPUs, three points each
    assert _series(page, "#tele-utilisation") == ["GPU 0 util %", "GPU 1 util %"]
    assert _points(page, "#tele-memory") == 12  # allocated and reserved per GPU
    assert _points(page, "#tele-temperature") == 6 and _points(page, "#tele-power") == 6
    assert _points(page, "#tele-step_time") == 3
    assert _series(page, "#tele-loss") == ["loss", "grad norm"]
    for chart in ("#tele-utilisation", "#tele-memory", "#tele-loss"):
        assert _painted(page, chart) > 1_000
        # The fragmentation warning and the worker's warning are marked on each chart.
        assert page.get_attribute(chart, "data-markers") == "2"
    expect(page.locator("#telemetry-warnings li")).to_have_count(2)
    codes = page.locator("#telemetry-warnings li").evaluate_all(
        "items => items.map(i => i.dataset.code)"
    )
    assert codes == ["memory_fragmentation", "worker"]
    assert "reserves 9000 MiB" in page.inner_text("#telemetry-warnings")
    assert hostile in page.inner_text("#telemetry-warnings")  # as text
    assert page.locator("#telemetry-history img").count() == 0
    assert page.locator("#telemetry-attempt option").all_text_contents() == ["1"]
    assert page.inner_text("#telemetry-summary") == "3 points"
    page.screenshot(path=str(tmp_path / "telemetry.png"), full_page=True)

    # A new heartbeat moves the step: the charts reload their history without a page reload.
    page.evaluate("window.sameDocument = true")
    clock.advance(seconds=20)
    with httpx.Client(base_url=url, timeout=30) as client:
        telemetry_heartbeat(client, running, step=5, step_time_s=0.9, gpus=[gpu_telemetry(0, 0)])
    expect(page.locator("#tele-step_time")).to_have_attribute("data-points", "4", timeout=20_000)
    assert page.evaluate("window.sameDocument") is True
    assert page.inner_text("#telemetry-summary") == "4 points"
    assert errors == []
    assert _csp_violations(page) == []


def test_a_fine_tunes_efficiency_is_shown_beside_the_teams_median(
    live: tuple[str, Seeded], browser_page: tuple[Any, list[str]], clock: FakeClock
) -> None:
    url, seeded = live
    page, errors = browser_page
    with httpx.Client(base_url=url, timeout=30) as client:
        dataset = upload_dataset(client, seeded.keys["alpha"])
        run_finetune(client, seeded.keys["alpha"], dataset, clock(), s1_kwh=0.004)
        clock.advance(seconds=900)
        second = run_finetune(client, seeded.keys["alpha"], dataset, clock(), s1_kwh=0.006)
    page.goto(f"{url}/dashboard/jobs/{second}")
    page.fill("#token", seeded.keys["alpha"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard/jobs/{second}")
    row = page.locator(
        "#efficiency-table tr[data-stage='s1'][data-figure='kwh_per_optimizer_step']"
    )
    assert row.locator("[data-field='team-ratio']").inner_text() == "1.5× the team's median"
    assert page.locator("#efficiency-table tbody tr").count() == 9  # s1, s2, training × 3
    # A job without telemetry says so instead of drawing empty axes.
    page.wait_for_selector("#tele-utilisation[data-points]")
    assert page.inner_text("#telemetry-summary") == "no telemetry stored for this attempt"
    assert page.locator("#tele-utilisation .chart-empty").count() == 1
    assert errors == []
    assert _csp_violations(page) == []
