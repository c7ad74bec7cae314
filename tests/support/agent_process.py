"""Entry point of a real worker agent process for the end-to-end tests (CPU-only)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from worker.cli import run_agent


def main() -> None:
    """Run an agent: agent_process.py SERVER FLEET_TOKEN WORK_DIR."""
    server, token, work_dir = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_agent(
        server,
        token,
        gpus=None,
        zone="ES",
        work_dir=Path(work_dir),
        cpu_only=True,
        poll_seconds=0.2,
        options={"sample_seconds": 0.5, "codecarbon": True},
    )


if __name__ == "__main__":
    main()
