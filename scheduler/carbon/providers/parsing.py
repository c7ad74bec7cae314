"""Lenient readers for the pieces of provider JSON: times, numbers, required fields."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scheduler.carbon.providers.base import ProviderDataError
from scheduler.carbon.series import IntensitySeries, as_utc, series_from_points


def field(provider: str, record: Any, key: str) -> Any:
    """`record[key]`, or ProviderDataError naming the provider and the missing field."""
    if not isinstance(record, Mapping) or key not in record:
        excerpt = str(record)[:200]
        raise ProviderDataError(f"{provider}: response lacks the field {key!r}: {excerpt}")
    return record[key]


def as_list(provider: str, value: Any, what: str) -> list[Any]:
    """`value` if it is a JSON array, else ProviderDataError."""
    if not isinstance(value, list):
        raise ProviderDataError(f"{provider}: {what} is not a list: {str(value)[:200]}")
    return value


def timestamp(provider: str, value: Any) -> datetime:
    """An ISO-8601 time from a response, in UTC (naive taken as UTC)."""
    if not isinstance(value, str):
        raise ProviderDataError(f"{provider}: time {value!r} is not a string")
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        raise ProviderDataError(f"{provider}: cannot read the time {value!r}") from None


def number(provider: str, value: Any) -> float | None:
    """A finite number from a response; None for JSON null (a missing reading)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProviderDataError(f"{provider}: value {value!r} is not a number")
    try:
        result = float(value)
    except ValueError:
        raise ProviderDataError(f"{provider}: value {value!r} is not a number") from None
    if not math.isfinite(result):
        raise ProviderDataError(f"{provider}: value {value!r} is not finite")
    return result


def to_series(
    provider: str,
    points: list[tuple[datetime, float | None]],
    step_minutes: int | None = None,
    *,
    labels: list[str] | None = None,
    details: list[str | None] | None = None,
    **meta: Any,
) -> IntensitySeries:
    """A series from parsed points; null readings become gaps, forward-filled (and, with
    per-point provenance `labels`, labelled `filled`)."""
    keep = [i for i, (_, value) in enumerate(points) if value is not None]
    if not keep:
        raise ProviderDataError(f"{provider}: response holds no intensity values")
    present = [points[i] for i in keep]
    try:
        return series_from_points(
            present,  # type: ignore[arg-type]  # the None values were left out above
            step_minutes,
            labels=None if labels is None else [labels[i] for i in keep],
            details=None if details is None else [details[i] for i in keep],
            **meta,
        )
    except ValueError as exc:
        raise ProviderDataError(f"{provider}: unusable time series: {exc}") from None
