"""The whole user path from the command line, without curl: a real `greenwindow serve` process,
a real CPU-only `greenwindow worker` process, and every step through the `greenwindow` CLI as a
subprocess: an admin creates a team, a key and a budget; the user uploads a dataset directory,
submits a tiny fine-tune, watches live watts, lists and downloads the adapter (sha256 checked)
and sees the charge in the budget.

The worker meters a CPU host (no GPU here): its watts are the host meter's (CodeCarbon's
CPU and RAM figures), reported in each heartbeat like a GPU's would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scheduler.client.render import fmt_kg

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ADMIN = "user-path-admin-token-0123456789abcdef"
FLEET = "user-path-worker-token-0123456789abcdef"
# What the `greenwindow` console script runs (pyproject: greenwindow = "scheduler.cli:main").
GREENWINDOW = "import sys; sys.argv[0] = 'greenwindow'; from scheduler.cli import main; main()"
# A figure in watts on a `watch` line, e.g. "running · stage s1 · loss 5.1 · 12.3 W · ...".
WATTS = re.compile(r"\b\d+(?:\.\d+)? W\b")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Greenwindow:
    """Runs `greenwindow ...` as a subprocess, as a user would from a shell."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, key: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", GREENWINDOW, *args],
            env={**self.env, "GREENWINDOW_API_KEY": key},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, key: str, timeout: float = 120) -> str:
        done = self(*args, key=key, timeout=timeout)
        assert done.returncode == 0, f"greenwindow {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout


def _process_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GREENWINDOW_") or key == "GREENWINDOW_TEST_POSTGRES_URL"
    }
    pythonpath = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(pythonpath), "COLUMNS": "200"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """`greenwindow serve` on a fresh SQLite database, with fast ticks and heartbeats."""
    port = _free_port()
    env = {
        **_process_env(tmp_path),
        "GREENWINDOW_DATA_DIR": str(tmp_path / "data"),
        "GREENWINDOW_ADMIN_TOKEN": ADMIN,
        "GREENWINDOW_WORKER_TOKEN": FLEET,
        "GREENWINDOW_HEARTBEAT_SECONDS": "1",
        "GREENWINDOW_LEASE_SECONDS": "30",
        # The happy path needs no reaping or replanning; slower ticks keep the CPU for the job.
        "GREENWINDOW_MAINTENANCE_SECONDS": "3",
        "GREENWINDOW_REPLAN_SECONDS": "3",
    }
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", GREENWINDOW, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "greenwindow serve did not answer /healthz"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def worker(service: str, tmp_path: Path) -> Iterator[Path]:
    """`greenwindow worker --cpu-only` attached to the service; yields its log's path."""
    log_path = tmp_path / "agent.log"
    log = log_path.open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-c", GREENWINDOW, "worker", "--server", service, "--cpu-only"]
        + ["--work-dir", str(tmp_path / "agent"), "--poll-seconds", "0.2"],
        cwd=tmp_path,
        env={**_process_env(tmp_path), "GREENWINDOW_WORKER_TOKEN": FLEET},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield log_path
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        log.close()


def _wait_until_ready(gw: Greenwindow, dataset_id: str, key: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        listed = gw.ok("datasets", "list", "--json", key=key)
        rows = [json.loads(line) for line in listed.splitlines()]
        (dataset,) = [row for row in rows if row["id"] == dataset_id]
        if dataset["state"] == "ready":
            return
        assert dataset["state"] == "validating", dataset
        assert time.monotonic() < deadline, "dataset still validating after 60 s"
        time.sleep(0.5)


def test_from_a_new_team_to_a_downloaded_adapter_and_a_charged_budget(
    service: str, worker: Path, tmp_path: Path
) -> None:
    gw = Greenwindow(
        {
            **_process_env(tmp_path),
            "GREENWINDOW_SERVER": service,
            "GREENWINDOW_CLIENT_CONFIG": str(tmp_path / "absent.toml"),
        },
        cwd=tmp_path,
    )

    # The admin: a team (its first key is shown once), a second key, a budget.
    created = gw.ok("admin", "teams", "create", "voice-lab", key=ADMIN)
    first_key = created.split("api key: ")[1].split()[0]
    rotated = gw.ok("admin", "keys", "create", "voice-lab", key=ADMIN)
    user_key = rotated.split("api key: ")[1].split()[0]
    first_key_id = created.split("key id ")[1].split(")")[0]
    gw.ok("admin", "keys", "revoke", "voice-lab", first_key_id, key=ADMIN)
    refused = gw("jobs", key=first_key)
    assert refused.returncode == 1 and refused.stderr.startswith("error: 401"), refused.stderr
    budget_set = gw.ok("admin", "budget", "set", "voice-lab", "--limit", "5", key=ADMIN)
    assert "5 kg CO2e per month (hard)" in budget_set

    # The user: a dataset directory, uploaded and validated.
    gw.ok("sample-dataset", str(tmp_path / "voice"), "--utterances", "4", key=user_key)
    uploaded = gw.ok("datasets", "upload", str(tmp_path / "voice"), "--name", "voice", key=user_key)
    match = re.match(r"uploaded dataset (\S+) \(4 utterances\)", uploaded)
    assert match, uploaded
    dataset_id = match.group(1)
    _wait_until_ready(gw, dataset_id, user_key)

    submitted = gw.ok(
        "submit", "--name", "tiny-s1", "--dataset", dataset_id, "--max-delay", "0",
        "--set", "stage=s1", "--set", "model_size=tiny", "--set", "max_steps=3",
        "--set", "batch_size=2", "--set", "lora_rank=4",
        key=user_key,
    )  # fmt: skip
    job_id = submitted.splitlines()[0].split()[-1]

    # Live: a watts figure on a `watch` line before the job's final line.
    watched = gw("watch", job_id, "--interval", "1", key=user_key, timeout=400)
    lines = watched.stdout.strip().splitlines()
    agent_log = worker.read_text(errors="replace")[-3000:]
    assert watched.returncode == 0, f"{watched.stdout}{watched.stderr}\n{agent_log}"
    assert lines[-1].startswith(f"{job_id} succeeded: "), lines
    live = [line for line in lines[:-1] if "running" in line and WATTS.search(line)]
    assert live, f"no live watts in watch output:\n{watched.stdout}"

    # The adapter: listed, then downloaded with its sha256 checked against the listing.
    listing = gw.ok("artifacts", job_id, key=user_key)
    (row,) = [line.split() for line in listing.splitlines() if "s1_lora.safetensors" in line]
    listed_sha_prefix = next(cell for cell in row if cell.endswith("…")).rstrip("…")
    fetched = gw.ok(
        "download", job_id, "s1_lora.safetensors", "--out", str(tmp_path / "out"), key=user_key
    )
    assert "sha256 ok" in fetched
    adapter = (tmp_path / "out" / "s1_lora.safetensors").read_bytes()
    assert hashlib.sha256(adapter).hexdigest().startswith(listed_sha_prefix)
    assert len(listed_sha_prefix) == 16
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s1_lora.safetensors"]

    # The charge: the budget's actual is the job's measured emissions.
    job = json.loads(gw.ok("status", job_id, "--json", key=user_key))
    figures = json.loads(gw.ok("budget", "voice-lab", "--json", key=user_key))
    assert job["actual_kg_co2e"] > 0
    assert figures["actual_kg_co2e"] == pytest.approx(job["actual_kg_co2e"])
    assert figures["committed_kg_co2e"] == pytest.approx(0.0)
    assert figures["remaining_kg_co2e"] == pytest.approx(5 - job["actual_kg_co2e"])
    shown = gw.ok("budget", "voice-lab", key=user_key)
    (actual_row,) = [line for line in shown.splitlines() if line.split()[:1] == ["actual"]]
    assert actual_row.split(None, 1)[1].strip() == fmt_kg(job["actual_kg_co2e"]), shown
