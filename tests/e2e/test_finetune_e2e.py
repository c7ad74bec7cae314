"""End to end on the CPU: a tiny two-stage GPT-SoVITS fine-tune of the sample dataset goes
through a real service and a real worker agent process and yields a downloadable adapter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load
from support.helpers import WORKER_TOKEN, admin_headers, bearer, serve_in_thread

from scheduler.app import create_app
from scheduler.demo import wait_until_validated
from scheduler.settings import Settings
from worker.training.sample import write_sample_dataset, zip_dataset

pytestmark = pytest.mark.slow
AGENT = Path(__file__).resolve().parents[1] / "support" / "agent_process.py"
REPO = Path(__file__).resolve().parents[2]


def test_tiny_two_stage_finetune_yields_a_downloadable_adapter(
    settings: Settings, tmp_path: Path
) -> None:
    fast = settings.model_copy(
        update={
            "lease_seconds": 30,
            "heartbeat_seconds": 1,
            "maintenance_seconds": 1,
            "replan_seconds": 1,
        }
    )
    dataset_dir = tmp_path / "voice"
    write_sample_dataset(dataset_dir, n_utterances=4)
    archive = zip_dataset(dataset_dir, tmp_path / "voice.zip").read_bytes()
    with serve_in_thread(create_app(fast, run_ticks=True)) as url:
        key = httpx.post(f"{url}/v1/teams", json={"name": "voice"}, headers=admin_headers()).json()[
            "api_key"
        ]
        dataset = httpx.post(
            f"{url}/v1/datasets",
            content=archive,
            timeout=60,
            headers={**bearer(key), "content-type": "application/zip"},
        )
        assert dataset.status_code == 201, dataset.text
        with httpx.Client(base_url=url, headers=bearer(key)) as team:
            wait_until_validated(team, dataset.json()["id"])  # audio is checked after upload
        job = httpx.post(
            f"{url}/v1/jobs",
            json={
                "name": "tiny-both",
                "dataset": {"id": dataset.json()["id"]},
                "config": {
                    "stage": "both",
                    "model_size": "tiny",
                    "max_steps": 2,
                    "batch_size": 2,
                    "lora_rank": 4,
                    "save_every_steps": 1,
                },
                "max_delay_minutes": 0,
            },
            headers=bearer(key),
        )
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        log = (tmp_path / "agent.log").open("wb")
        agent = subprocess.Popen(
            [sys.executable, str(AGENT), url, WORKER_TOKEN, str(tmp_path / "agent")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        try:
            deadline = time.monotonic() + 240
            state = ""
            while time.monotonic() < deadline:
                state = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(key)).json()["state"]
                if state in {"succeeded", "failed", "cancelled"}:
                    break
                time.sleep(0.5)
            agent_log = (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
            assert state == "succeeded", agent_log
            artifacts = {
                a["name"]: a
                for a in httpx.get(f"{url}/v1/jobs/{job_id}/artifacts", headers=bearer(key)).json()
            }
            assert {"s1_lora.safetensors", "s2_lora.safetensors"} <= set(artifacts), artifacts
            adapter = httpx.get(
                f"{url}/v1/jobs/{job_id}/artifacts/s1_lora.safetensors", headers=bearer(key)
            )
            assert adapter.status_code == 200
            tensors = load(adapter.content)
            assert tensors and any("lora" in name for name in tensors)
            energy = httpx.get(f"{url}/v1/jobs/{job_id}/energy", headers=bearer(key)).json()
            assert energy["kwh"]["total"] > 0 and energy["kg_co2e"] > 0
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            log.close()
