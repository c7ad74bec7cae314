"""The original GPT-SoVITS classes from `../shared/reference`, imported as a test oracle.

The reference is a subset of the upstream repository (see its README). Its stubs directory
stands in for packages the model code imports but never uses here (pytorch_lightning,
torchmetrics, matplotlib, ...). Those stand-ins must not leak into the rest of the test
session, so the paths are only on sys.path while the oracle modules import, and the stand-in
packages are dropped from sys.modules afterwards (the oracle modules keep their references).

Locally a missing reference skips these tests; under CI=true it fails them.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"
STUBS = REFERENCE / "GPT-SoVITS-stubs"
CODE = REFERENCE / "GPT-SoVITS" / "GPT_SoVITS"
_MODULES = {
    "models": "module.models",
    "commons": "module.commons",
    "t2s": "AR.models.t2s_lightning_module",
    "process_ckpt": "process_ckpt",
}
_cache: SimpleNamespace | None = None


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the GPT-SoVITS reference is required in CI: {reason}")
    pytest.skip(reason)


def load_reference() -> SimpleNamespace:
    """The oracle modules (imported once per session)."""
    global _cache
    if _cache is not None:
        return _cache
    if not CODE.is_dir() or not STUBS.is_dir():
        _missing(f"{REFERENCE} is not there")
    try:
        importlib.import_module("einops")
    except ImportError:
        _missing("einops (dev extra) is not installed")
    saved_path = list(sys.path)
    before = set(sys.modules)
    stub_names = {p.name for p in STUBS.iterdir() if p.is_dir()}
    sys.path[:0] = [str(STUBS), str(CODE)]
    try:
        loaded = {name: importlib.import_module(mod) for name, mod in _MODULES.items()}
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            if name.split(".")[0] in stub_names:
                del sys.modules[name]
    _cache = SimpleNamespace(**loaded)
    return _cache
