"""The greenwindow client: an HTTP client of the API and the user-facing CLI commands."""

from __future__ import annotations

import typer

from scheduler.client.commands import ClientHooks
from scheduler.client.commands import register_client_commands as _register_user_commands
from scheduler.client.config import ClientConfig, resolve_config
from scheduler.client.http import ApiError, ClientError, ConnectionFailed, GreenwindowClient


def register_client_commands(app: typer.Typer) -> None:
    """Add every client command (user, files, admin) to the `greenwindow` app."""
    from scheduler.client.admin import register_admin_commands
    from scheduler.client.files import register_file_commands

    _register_user_commands(app)
    register_file_commands(app)
    register_admin_commands(app)


__all__ = [
    "ApiError",
    "ClientConfig",
    "ClientError",
    "ClientHooks",
    "ConnectionFailed",
    "GreenwindowClient",
    "register_client_commands",
    "resolve_config",
]
