"""Every failure prints one clear line on stderr and exits 1, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

from support.cli_driver import Cli
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.client import ClientHooks


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_validation_error_is_one_line(cli: Cli) -> None:
    result = cli("submit", "--name", "big", "--kind", "burn-in", "--gpus", "9")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert _one_line_error(result.stderr) == (
        "error: 422 gpus: Input should be less than or equal to 8"
    )


def test_bad_key_is_one_line(cli: Cli) -> None:
    result = cli("jobs", env={**cli.env, "GREENWINDOW_API_KEY": "not-a-key"})
    assert result.exit_code == 1
    assert _one_line_error(result.stderr) == "error: 401 invalid or revoked API key"


def test_missing_key_is_one_line(cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "GREENWINDOW_API_KEY"}
    result = cli("jobs", env=env)
    assert result.exit_code == 1
    assert _one_line_error(result.stderr).startswith("error: 401 missing API key")


def test_unknown_job_is_one_line(cli: Cli) -> None:
    result = cli("status", "01NOSUCHJOB0000000000000000")
    assert result.exit_code == 1
    line = _one_line_error(result.stderr)
    assert line.startswith("error: 404 ") and "01NOSUCHJOB0000000000000000" in line


def test_a_job_id_cannot_escape_its_route(cli: Cli) -> None:
    # '../teams' would otherwise resolve to another endpoint.
    result = cli("status", "../teams")
    assert result.exit_code == 1
    assert _one_line_error(result.stderr).startswith("error: 404")


def test_unreadable_job_file_is_one_line(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "job.yaml"
    broken.write_text("name: [unclosed\n")
    result = cli("submit", str(broken))
    assert result.exit_code == 1
    assert _one_line_error(result.stderr).startswith(f"error: job file {broken} is not valid yaml")

    missing = cli("submit", str(tmp_path / "absent.yaml"))
    assert missing.exit_code == 1
    assert "cannot read job file" in _one_line_error(missing.stderr)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    env = {
        "GREENWINDOW_SERVER": server,
        "GREENWINDOW_API_KEY": "k",
        "GREENWINDOW_CLIENT_CONFIG": str(tmp_path / "absent.toml"),
    }
    # A real socket this time: the error comes from the operating system.
    result = CliRunner().invoke(app, ["jobs"], obj=ClientHooks(env=env))
    assert result.exit_code == 1
    assert _one_line_error(result.stderr) == f"error: cannot reach {server}: connection refused"


def test_broken_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text('server = "http://x\n')
    env = {"GREENWINDOW_CLIENT_CONFIG": str(config)}
    result = CliRunner().invoke(app, ["jobs"], obj=ClientHooks(env=env))
    assert result.exit_code == 1
    assert _one_line_error(result.stderr).startswith(f"error: cannot read client config {config}")
