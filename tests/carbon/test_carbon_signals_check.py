"""`greenwindow signals check` against local fakes of the providers over real HTTP."""

from __future__ import annotations

import pytest
from support.fake_carbon_server import electricitymaps_routes, serving, ukci_routes, watttime_routes
from typer.testing import CliRunner

from scheduler.cli import app

runner = CliRunner()


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("TOKEN", "USERNAME", "PASSWORD", "PLAN", "BASE_URL", "TRACE_PATH"):
        monkeypatch.delenv(f"GREENWINDOW_CARBON_{name}", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(f"GREENWINDOW_{name.upper()}", value)


def check(*args: str):
    return runner.invoke(app, ["signals", "check", *args])


def line_of(output: str, need: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(need))


def test_free_electricitymaps_token_reports_plan_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(electricitymaps_routes("free")) as server:
        configure(
            monkeypatch,
            carbon_provider="electricitymaps",
            carbon_token="em-token",
            carbon_plan="free",
            carbon_base_url=f"{server.url}/v3/",
        )
        result = check("--zone", "DE")
        # Each endpoint once.
        assert sorted(server.paths()) == sorted(
            f"/v3/carbon-intensity/{name}"
            for name in ("latest", "history", "past-range", "forecast")
        )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "provider electricitymaps, zone DE, configured plan free" in out
    assert "ok:" in line_of(out, "latest") and "estimated: TIME_SLICER_AVERAGE" in line_of(
        out, "latest"
    )
    assert "ok: 24 slots of 60 min" in line_of(out, "history")
    assert "23 observed, 1 estimated" in line_of(out, "history")
    for need, endpoint in (
        ("forecast", "/carbon-intensity/forecast"),
        ("past range", "/carbon-intensity/past-range"),
    ):
        line = line_of(out, need)
        assert "plan limit:" in line and endpoint in line and "Invalid auth-token" in line
    assert "token rejected" not in out and "rejected:" not in out


def test_paid_account_on_a_free_setting_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(electricitymaps_routes("paid")) as server:
        configure(
            monkeypatch,
            carbon_provider="electricitymaps",
            carbon_token="em-token",
            zone="DE",
            carbon_base_url=f"{server.url}/v3/",
        )
        result = check()
        horizons = [q["horizonHours"] for path, q in server.requests if path.endswith("forecast")]
    assert result.exit_code == 0, result.output
    assert horizons == ["72"]
    assert "ok: 72 h ahead in 60-min slots" in line_of(result.output, "forecast")
    assert "set GREENWINDOW_CARBON_PLAN=paid" in result.output


def test_a_wrong_token_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(electricitymaps_routes("paid", token="the-real-one")) as server:
        configure(
            monkeypatch,
            carbon_provider="electricitymaps",
            carbon_token="a-typo",
            carbon_base_url=f"{server.url}/v3/",
        )
        result = check("--zone", "DE")
    assert result.exit_code == 1
    assert "rejected: electricitymaps: token rejected" in line_of(result.output, "latest")
    assert "credentials rejected" in result.output


def test_another_zones_answer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(electricitymaps_routes("free", answer_zone="FR")) as server:
        configure(
            monkeypatch,
            carbon_provider="electricitymaps",
            carbon_token="em-token",
            carbon_base_url=f"{server.url}/v3/",
        )
        result = check("--zone", "DE")
    assert "bad answer:" in line_of(result.output, "latest")
    assert "answer is for zone FR" in line_of(result.output, "latest")


def test_free_watttime_outside_caiso_north(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(watttime_routes("free")) as server:
        configure(
            monkeypatch,
            carbon_provider="watttime",
            carbon_username="ada",
            carbon_password="pw",
            carbon_base_url=server.url,
        )
        result = check("--zone", "PJM_NJ")
        asked = [(path, q.get("signal_type")) for path, q in server.requests if path != "/login"]
    assert result.exit_code == 1  # nothing readable for this region on this account
    assert ("/v3/forecast", "co2_aoer") not in asked
    for need in ("latest + history (marginal)", "forecast (marginal)", "history (average)"):
        line = line_of(result.output, need)
        assert "plan limit:" in line and "free access to CAISO_NORTH" in line
    assert "reads CAISO_NORTH only" in result.output and "rejected" not in result.output


def test_free_watttime_in_caiso_north(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(watttime_routes("free")) as server:
        configure(
            monkeypatch,
            carbon_provider="watttime",
            carbon_username="ada",
            carbon_password="pw",
            carbon_base_url=server.url,
        )
        result = check("--zone", "CAISO_NORTH")
        logins = server.paths().count("/login")
    assert result.exit_code == 0, result.output
    assert logins == 1
    assert "ok: 72 h ahead in 5-min slots" in line_of(result.output, "forecast (marginal)")
    assert "ok:" in line_of(result.output, "latest + history (marginal)")


def test_trace_needs_no_account(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, carbon_provider="trace")
    result = check("--zone", "ES")
    assert result.exit_code == 0, result.output
    assert "replayed" in line_of(result.output, "latest")


def test_ukci_needs_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(ukci_routes()) as server:
        configure(monkeypatch, carbon_provider="ukci", carbon_base_url=server.url)
        result = check("--zone", "GB")
        paths = server.paths()
    assert result.exit_code == 0, result.output
    assert len(paths) == 3 and paths[0] == "/intensity" and paths[2].endswith("/fw48h")
    assert "(observed)" in line_of(result.output, "latest")
    assert "ok: 48 h ahead in 30-min slots" in line_of(result.output, "forecast")
    assert "slots of 30 min" in line_of(result.output, "history")
    assert "observed)" in line_of(result.output, "history")
    assert "open API, no plan" in result.output


def test_a_provider_that_cannot_be_built_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, carbon_provider="electricitymaps")
    result = check("--zone", "DE")
    assert result.exit_code == 2
    assert "GREENWINDOW_CARBON_TOKEN" in result.output
