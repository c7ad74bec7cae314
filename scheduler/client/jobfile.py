"""Building a job submission from a YAML/JSON file and command-line flags."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from scheduler.client.http import ClientError


class JobFileError(ClientError):
    """The job file or a flag cannot be turned into a submission."""


def load_job_file(path: Path) -> dict[str, Any]:
    """A job body from a .json, .yaml or .yml file (JSON is valid YAML, so any suffix works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobFileError(f"cannot read job file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kind = path.suffix[1:] or "YAML"
        raise JobFileError(f"job file {path} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise JobFileError(f"job file {path} must hold a mapping of job fields")
    return data


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`key=value` pairs (values read as YAML scalars; dotted keys nest) as a config mapping."""
    config: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise JobFileError(f"--set expects key=value, got '{assignment}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target = config
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise JobFileError(f"--set {key}: '{parent}' is already a value")
        target[leaf] = value
    return config


def merge_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied recursively (flags refine a job file's config)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_submission(
    file_body: dict[str, Any] | None, flags: dict[str, Any], config_overrides: dict[str, Any]
) -> dict[str, Any]:
    """The request body: the file's fields, then every flag that was given."""
    body = dict(file_body or {})
    for key, value in flags.items():
        if value is not None:
            body[key] = value
    if isinstance(body.get("dataset"), str):
        body["dataset"] = {"id": body["dataset"]}
    if config_overrides:
        body["config"] = merge_config(dict(body.get("config") or {}), config_overrides)
    if "deadline" in body and "max_delay_minutes" in body and flags.get("deadline") is not None:
        # A --deadline flag replaces the file's relative slack rather than clashing with it.
        body.pop("max_delay_minutes")
    elif "deadline" in body and flags.get("max_delay_minutes") is not None:
        body.pop("deadline")
    if isinstance(body.get("deadline"), date):
        body["deadline"] = _as_rfc3339(body["deadline"])
    if not body.get("name"):
        raise JobFileError("a job needs a name: pass --name or put 'name' in the job file")
    return body


def _as_rfc3339(value: date) -> str:
    """A YAML timestamp as RFC 3339; PyYAML gives naive datetimes already converted to UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()
