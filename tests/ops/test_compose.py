"""docker-compose.yml, the Dockerfile and deploy/prometheus.yml, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from scheduler.cli import app
from scheduler.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _exec_form(dockerfile: list[tuple[str, str]], keyword: str) -> list[str]:
    found = [json.loads(rest) for kw, rest in dockerfile if kw == keyword]
    assert found, f"the Dockerfile has no {keyword} in exec form"
    return found[-1]


def _check_cli(argv: list[str]) -> None:
    """argv must start with `greenwindow`, name a registered command and only its options."""
    assert argv[0] == "greenwindow", argv
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert argv[1] in commands, f"'{argv[1]}' is not a greenwindow command: {sorted(commands)}"
    known = {opt for param in commands[argv[1]].params for opt in param.opts}
    for token in argv[2:]:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"{argv[1]} has no option {token}"


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "api", "worker", "prometheus"} <= set(services)
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert all("profiles" not in services[name] for name in ("postgres", "api", "worker"))


def test_postgres_is_healthchecked_on_a_named_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test)
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]


def test_every_volume_is_declared_or_a_real_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_api_waits_for_postgres_and_reaches_it(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = interpolate(api["environment"]["GREENWINDOW_DATABASE_URL"])
    settings = load_settings(database_url=url, data_dir=Path("/tmp/unused"))
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    postgres_env = compose["services"]["postgres"]["environment"]
    assert url.endswith("/" + postgres_env["POSTGRES_DB"])
    assert f"//{postgres_env['POSTGRES_USER']}:" in url


def test_api_healthcheck_hits_healthz_on_the_served_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "/healthz" in probe
    port = api["command"][api["command"].index("--port") + 1]
    assert f"127.0.0.1:{port}/healthz" in probe
    assert any(mapping.endswith(f":{port}") for mapping in api["ports"])
    assert api["build"]["context"] == "." and (ROOT / "Dockerfile").exists()


def test_worker_gets_the_gpus_and_waits_for_a_healthy_api(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cu124"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    server = worker["command"][worker["command"].index("--server") + 1]
    api_port = compose["services"]["api"]["command"][-1]
    assert server == f"http://api:{api_port}"
    assert "GREENWINDOW_WORKER_TOKEN" in worker["environment"]
    # The image runs as a non-root user: scratch space must be inside its volume.
    work_dir = worker["command"][worker["command"].index("--work-dir") + 1]
    mounted = [mount.split(":")[1] for mount in worker["volumes"]]
    assert any(work_dir.startswith(target + "/") for target in mounted)


def test_no_default_secrets(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        for key in ("GREENWINDOW_ADMIN_TOKEN", "GREENWINDOW_WORKER_TOKEN"):
            if key in env:
                # `:?` makes compose refuse to start without the variable.
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]*\}}", env[key]), (name, key)


def test_commands_name_real_greenwindow_subcommands(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    entrypoint = _exec_form(dockerfile, "ENTRYPOINT")
    _check_cli(entrypoint + _exec_form(dockerfile, "CMD"))
    for name in ("api", "worker"):
        _check_cli(entrypoint + compose["services"][name]["command"])


def test_the_data_dir_is_the_volume_and_writable(dockerfile: list[tuple[str, str]]) -> None:
    env = " ".join(rest for kw, rest in dockerfile if kw == "ENV")
    assert "GREENWINDOW_DATA_DIR=/var/lib/greenwindow" in env
    assert ("VOLUME", '["/var/lib/greenwindow"]') in dockerfile
    keywords = [kw for kw, _ in dockerfile]
    assert keywords.index("USER") < len(keywords) - 1 - keywords[::-1].index("WORKDIR")
    assert [rest for kw, rest in dockerfile if kw == "WORKDIR"][-1] == "/var/lib/greenwindow"


def test_console_script_is_the_typer_app() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["greenwindow"] == "scheduler.cli:main"


def _stage(dockerfile: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """The instructions of one build stage (after its FROM, up to the next FROM)."""
    start = dockerfile.index(("FROM", next(r for k, r in dockerfile if r.endswith(f"AS {name}"))))
    end = next((i for i in range(start + 1, len(dockerfile)) if dockerfile[i][0] == "FROM"), None)
    return dockerfile[start + 1 : end]


def test_dockerfile_torch_variants_and_base(dockerfile: list[tuple[str, str]]) -> None:
    assert ("FROM", "python:3.11-slim AS base") in dockerfile
    worker = _stage(dockerfile, "worker")
    args = dict(rest.split("=", 1) for kw, rest in worker if kw == "ARG" and "=" in rest)
    assert args["TORCH_VARIANT"] == "cpu" and args["TORCH_VERSION"] == "2.13.0"
    runs = [rest for kw, rest in worker if kw == "RUN"]
    torch_run = next(run for run in runs if "torch==" in run)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in torch_run
    assert "--index-url" in torch_run
    # The project installs after torch, so pip keeps the chosen build.
    assert runs.index(torch_run) < next(i for i, run in enumerate(runs) if '".[worker]"' in run)


def test_the_api_image_has_no_torch(dockerfile: list[tuple[str, str]], compose: dict) -> None:
    api = _stage(dockerfile, "api")
    assert [rest for kw, rest in api if kw == "RUN"] == ["pip install ."]
    # The last stage is the default target: a plain `docker build .` is the light image.
    assert [rest for kw, rest in dockerfile if kw == "FROM"][-1] == "base AS api"
    assert compose["services"]["api"]["build"]["target"] == "api"
    assert compose["services"]["worker"]["build"]["target"] == "worker"


def test_dockerfile_copies_every_package(dockerfile: list[tuple[str, str]]) -> None:
    copied = {rest.split()[0] for kw, rest in dockerfile if kw == "COPY"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied
    assert all((ROOT / path).exists() for path in copied if "*" not in path)


def test_prometheus_scrapes_the_api_metrics(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    api_port = compose["services"]["api"]["command"][-1]
    assert job["static_configs"][0]["targets"] == [f"api:{api_port}"]
    mount = compose["services"]["prometheus"]["volumes"][0]
    assert mount.startswith("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml")
    assert compose["services"]["prometheus"]["command"] == [
        "--config.file=/etc/prometheus/prometheus.yml"
    ]
