"""The greenwindow client: the Python API for scripts and the user-facing CLI commands.

`GreenwindowClient` returns typed models (scheduler.client.models); every failure raises a
`ClientError` whose str() is the CLI's one-line message.
"""

from __future__ import annotations

import typer

from scheduler.client.api import GreenwindowClient
from scheduler.client.commands import ClientHooks
from scheduler.client.commands import register_client_commands as _register_user_commands
from scheduler.client.config import ClientConfig, ClientConfigError, resolve_config
from scheduler.client.errors import ApiError, ClientError, ConnectionFailed, UnexpectedResponse
from scheduler.client.http import JsonClient
from scheduler.client.models import (
    ApiKey,
    Artifact,
    BudgetHistory,
    BudgetStatus,
    BurnPoint,
    Dataset,
    EnergyBreakdown,
    EnergyReport,
    Forecast,
    Job,
    LiveFigures,
    NewKey,
    Progress,
    Team,
    Worker,
)


def register_client_commands(app: typer.Typer) -> None:
    """Add every client command (user, files, admin) to the `greenwindow` app."""
    from scheduler.client.admin import register_admin_commands
    from scheduler.client.files import register_file_commands

    _register_user_commands(app)
    register_file_commands(app)
    register_admin_commands(app)


__all__ = [
    "ApiError",
    "ApiKey",
    "Artifact",
    "BudgetHistory",
    "BudgetStatus",
    "BurnPoint",
    "ClientConfig",
    "ClientConfigError",
    "ClientError",
    "ClientHooks",
    "ConnectionFailed",
    "Dataset",
    "EnergyBreakdown",
    "EnergyReport",
    "Forecast",
    "GreenwindowClient",
    "Job",
    "JsonClient",
    "LiveFigures",
    "NewKey",
    "Progress",
    "Team",
    "UnexpectedResponse",
    "Worker",
    "register_client_commands",
    "resolve_config",
]
