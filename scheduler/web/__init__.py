"""The operator dashboard: server-rendered pages, their JSON data, and charts drawn with the
vendored uPlot (static/VENDORED.md)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from scheduler.web.router import router

STATIC_DIR = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard pages under /dashboard and its assets under /dashboard/static."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
