"""The Python API for scripts: `GreenwindowClient`, with typed answers and the CLI's errors.

    from scheduler.client import GreenwindowClient

    with GreenwindowClient() as gw:            # server and key as the CLI finds them
        dataset = gw.upload_dataset("voice/")  # zipped, uploaded, validated
        job = gw.submit("voice-ft", dataset=dataset, config={"max_steps": 200})
        job = gw.wait(job.id)
        print(job.state, gw.energy(job.id).kg_co2e)
        gw.download(job.id, out_dir="out/")

Every failure raises a `ClientError` whose `str()` is the line the CLI prints after `error: `.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from scheduler.client.config import ClientConfig, resolve_config
from scheduler.client.errors import ClientError
from scheduler.client.http import JsonClient
from scheduler.client.models import (
    Artifact,
    BudgetHistory,
    BudgetStatus,
    Dataset,
    EnergyReport,
    Forecast,
    Job,
    NewKey,
    Team,
    Worker,
)


class GreenwindowClient:
    """The greenwindow API for Python scripts.

    Without a `config`, the server and key resolve as the CLI's do: the `server` and
    `api_key` arguments, then GREENWINDOW_SERVER / GREENWINDOW_API_KEY, then the client
    config file. `json` is the untyped layer underneath (decoded JSON per route).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        server: str | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        if config is None:
            config = resolve_config(server=server, api_key=api_key)
        self.config = config
        self.json = JsonClient(config, transport=transport, timeout=timeout)

    def __enter__(self) -> GreenwindowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.json.close()

    # -- jobs -------------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        *,
        dataset: str | Dataset | None = None,
        config: Mapping[str, Any] | None = None,
        kind: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Submit a job; `options` are the other fields of `POST /v1/jobs` (deadline, zone,
        max_delay_minutes, interruptible, objective, priority, gpus, ...)."""
        body: dict[str, Any] = {"name": name, **options}
        if kind is not None:
            body["kind"] = kind
        if dataset is not None:
            body["dataset"] = {"id": dataset.id if isinstance(dataset, Dataset) else dataset}
        if config is not None:
            body["config"] = dict(config)
        return Job.from_api(self.json.submit(body, idempotency_key=idempotency_key))

    def job(self, job_id: str) -> Job:
        """One job."""
        return Job.from_api(self.json.job(job_id))

    def jobs(self, *, state: str | None = None, all_pages: bool = False) -> list[Job]:
        """The team's jobs, newest first: the first page, or every page when `all_pages`."""
        return [
            Job.from_api(item) for item in self.json.iter_jobs(state=state, all_pages=all_pages)
        ]

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        interval_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """Poll until the job succeeds, fails or is cancelled; the final job.

        Raises ClientError when `timeout_s` passes first. A failed job is returned, not raised:
        look at `job.state` and `job.error`.
        """
        return Job.from_api(
            self.json.wait(job_id, timeout_s=timeout_s, interval_s=interval_s, sleep=sleep)
        )

    def cancel(self, job_id: str) -> Job:
        """Ask for a job to be cancelled; the job (a running one stops at its next heartbeat)."""
        return Job.from_api(self.json.cancel(job_id))

    def energy(self, job_id: str) -> EnergyReport:
        """The job's measured energy and emissions."""
        return EnergyReport.from_api(self.json.energy(job_id))

    # -- datasets and artifacts -------------------------------------------------------------

    def upload_dataset(
        self,
        source: str | Path,
        *,
        name: str | None = None,
        wait: bool = True,
        timeout_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Dataset:
        """Upload a dataset directory (its .list and audio files, zipped here) or a zip.

        With `wait`, returns once the service has validated it, and raises ClientError if it
        was refused; without, returns at once (its `state` may still be `validating`).
        """
        # Imported here: the file helpers live with the CLI's file commands.
        from scheduler.client.files import upload_dataset_path, wait_until_usable

        stored = upload_dataset_path(self.json, Path(source), name=name)
        if wait:
            stored = wait_until_usable(self.json, stored, sleep=sleep, timeout_s=timeout_s)
        return Dataset.from_api(stored)

    def datasets(self) -> list[Dataset]:
        """The team's datasets, newest first."""
        return Dataset.list_from_api(self.json.datasets())

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.from_api(self.json.dataset(dataset_id))

    def artifacts(self, job_id: str) -> list[Artifact]:
        """The files a job stored."""
        return Artifact.list_from_api(self.json.artifacts(job_id))

    def download(
        self,
        job_id: str,
        names: Iterable[str] | None = None,
        *,
        out_dir: str | Path = ".",
        on_bytes: Callable[[int], None] | None = None,
    ) -> list[Path]:
        """Download a job's artifacts (all, or those named) into `out_dir`; their paths.

        Each file's sha256 is checked against the listing before it takes its name; a
        mismatch raises ClientError and leaves nothing behind.
        """
        listed = self.artifacts(job_id)
        if names is None:
            chosen = listed
        else:
            by_name = {artifact.name: artifact for artifact in listed}
            wanted = list(names)
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                known = ", ".join(sorted(by_name)) or "none"
                raise ClientError(f"job {job_id} has no artifact {unknown[0]!r} (it has: {known})")
            chosen = [by_name[name] for name in wanted]
        return [
            self.download_artifact(job_id, artifact, out_dir, on_bytes=on_bytes)
            for artifact in chosen
        ]

    def download_artifact(
        self,
        job_id: str,
        artifact: Artifact,
        out_dir: str | Path = ".",
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Path:
        """Download one listed artifact, sha256 checked; its path."""
        return self.json.download_artifact(
            job_id,
            {"name": artifact.name, "sha256": artifact.sha256},
            Path(out_dir),
            on_bytes=on_bytes,
        )

    # -- budgets and carbon -----------------------------------------------------------------

    def budget(self, team: str) -> BudgetStatus:
        """The team's budget figures for the current period."""
        return BudgetStatus.from_api(self.json.budget(team))

    def budget_history(self, team: str) -> BudgetHistory:
        """How the team's budget burned this period."""
        return BudgetHistory.from_api(self.json.budget_history(team))

    def forecast(self, zone: str, *, hours: int = 48) -> Forecast:
        """The zone's carbon-intensity forecast."""
        return Forecast.from_api(self.json.forecast(zone, hours=hours))

    # -- administration (the admin token as key) --------------------------------------------

    def create_team(self, name: str, *, webhook_url: str | None = None) -> NewKey:
        """Create a team; its first key (shown once) is the answer."""
        return NewKey.from_api(self.json.create_team(name, webhook_url=webhook_url))

    def teams(self) -> list[Team]:
        return Team.list_from_api(self.json.teams())

    def create_key(self, team: str) -> NewKey:
        """A new key for a team, shown once."""
        return NewKey.from_api(self.json.create_key(team))

    def revoke_key(self, team: str, key_id: str) -> None:
        self.json.revoke_key(team, key_id)

    def set_budget(
        self,
        team: str,
        limit_kg_co2e: float,
        *,
        period: str = "month",
        mode: str = "hard",
        thresholds: Iterable[tuple[float, str]] = (),
    ) -> BudgetStatus:
        """Set or replace a team's budget; thresholds as (percent, action) pairs."""
        spec = {
            "period": period,
            "limit_kg_co2e": limit_kg_co2e,
            "mode": mode,
            "thresholds": [{"percent": p, "action": a} for p, a in thresholds],
        }
        return BudgetStatus.from_api(self.json.set_budget(team, spec))

    def workers(self) -> list[Worker]:
        return Worker.list_from_api(self.json.workers())
