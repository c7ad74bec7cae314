"""Telemetry tests drive the worker protocol with the fleet helpers of tests/workers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
