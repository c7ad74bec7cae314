"""The greenwindow client: an HTTP client of the API and the user-facing CLI commands."""

from __future__ import annotations

from scheduler.client.commands import ClientHooks, register_client_commands
from scheduler.client.config import ClientConfig, resolve_config
from scheduler.client.http import ApiError, ClientError, ConnectionFailed, GreenwindowClient

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
