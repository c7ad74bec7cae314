"""Job names and server messages cannot drive the terminal: escapes, links and markup are inert."""

from __future__ import annotations

import io

from rich.console import Console
from support.cli_driver import Cli
from support.helpers import bearer, burn_in_job

from scheduler.client import render

CLEAR_SCREEN = "\x1b[2J"
OSC8_LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
MARKUP = "[bold red]boom[/bold red]"
BIDI = "\u202egnp.exe"
HOSTILE_NAME = f"n{CLEAR_SCREEN}{OSC8_LINK}{MARKUP}{BIDI}\r\nfake row"


def assert_inert(output: str) -> None:
    assert "\x1b" not in output and "\u202e" not in output and "\r" not in output
    assert "\\x1b[2J" in output  # shown, escaped
    assert "\\x1b]8;;https://evil.example/" in output
    assert MARKUP in output  # printed as written, not styled
    assert "\\u202egnp.exe" in output
    assert "\\x0d\\x0afake row" in output


def name_column(table: str) -> str:
    """The jobs table's name column with its folded lines joined again."""
    rows = [line.split("│") for line in table.splitlines() if line.startswith("│")]
    # Folding drops the space it breaks at; compare without spaces.
    return "".join(row[2].strip() for row in rows).replace(" ", "")


def submit_hostile(cli: Cli, team_key: str) -> str:
    response = cli.client.post(
        "/v1/jobs", json=burn_in_job(name=HOSTILE_NAME), headers=bearer(team_key)
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_jobs_status_cancel_and_watch_print_hostile_names_inert(cli: Cli, team_key: str) -> None:
    job_id = submit_hostile(cli, team_key)
    listed = cli("jobs")
    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout
    name = name_column(listed.stdout)
    assert (
        "\\x1b[2J" in name
        and "\\x1b]8;;https://evil.example/" in name
        and MARKUP.replace(" ", "") in name
    )
    shown = cli("status", job_id)
    assert shown.exit_code == 0, shown.output
    assert_inert(shown.stdout)
    assert cli("cancel", job_id).exit_code == 0
    watched = cli("watch", job_id, "--interval", "0")
    assert watched.exit_code == 1  # cancelled, not succeeded
    assert_inert(watched.stdout)


def test_error_messages_echoing_user_input_are_inert(cli: Cli) -> None:
    # The server's 404 repeats the id; OSC 0 would retitle the terminal window.
    result = cli("status", f"x{CLEAR_SCREEN}\x1b]0;pwned\x07")
    assert result.exit_code == 1
    assert "unknown job" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in result.output


def test_tables_stay_inert_on_a_colour_terminal_that_parses_markup() -> None:
    """The demo prints tables on a console with markup on; cells never go through it."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=300)
    job = {"id": "j1", "name": HOSTILE_NAME, "state": "scheduled", "state_reason": MARKUP}
    console.print(render.jobs_table([job]))
    console.print(render.key_value_table(render.job_rows(job)))
    console.print(render.progress_line({**job, "state_reason": OSC8_LINK}))
    output = buffer.getvalue()
    assert CLEAR_SCREEN not in output and "\x1b]8" not in output and "\u202e" not in output
    assert MARKUP in output
    assert "\\x1b[2J" in output and "\\x1b]8;;https://evil.example/" in output


def test_inert_keeps_ordinary_text_and_escapes_every_control() -> None:
    assert render.inert("alice-v1 (ü, 東京) [not markup]") == "alice-v1 (ü, 東京) [not markup]"
    controls = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)])
    escaped = render.inert(controls)
    assert all(ord(ch) >= 0x20 and not 0x7F <= ord(ch) < 0xA0 for ch in escaped)
    assert render.inert_data({"a\x1b": ["\x07", 3, None]}) == {"a\\x1b": ["\\x07", 3, None]}
