"""`greenwindow signals check`: call each of the provider's endpoints once and say what works.

Operators run it once at set-up, with the credentials the service will use. Every endpoint
is tried whatever the configured plan, so the report can tell a free account from a paid
one: an endpoint the account lacks is reported as a plan limit, a wrong credential as a
rejection. Nothing is stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from scheduler.carbon.providers import electricitymaps as em_api
from scheduler.carbon.providers.base import (
    Clock,
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderPlanLimit,
    ProviderUnavailable,
    utc_now,
)
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.http import Sleep
from scheduler.carbon.providers.trace import TraceProvider
from scheduler.carbon.providers.ukci import UkciProvider
from scheduler.carbon.providers.watttime import FREE_REGION, WattTimeProvider
from scheduler.carbon.series import IntensitySeries

# Horizon asked of forecast endpoints: the longest any provider offers.
PROBE_HORIZON_HOURS = 72
OK = "ok"
PLAN_LIMIT = "plan limit"
REJECTED = "rejected"


@dataclass(frozen=True)
class Probe:
    """One endpoint tried once: what it is for, whether the free plan has it, the outcome."""

    need: str  # "latest", "history", "past range", "forecast", "average"
    endpoint: str
    free: bool  # whether the provider's free plan includes it (for this zone)
    outcome: str  # "ok", "plan limit", "rejected", "unavailable", "bad answer", "error"
    summary: str


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ")


def _labels(series: IntensitySeries, default: str) -> str:
    counts = Counter(series.labels(default))
    return ", ".join(f"{count} {label}" for label, count in counts.most_common())


def _latest(series: IntensitySeries) -> str:
    label = series.labels("observed")[0]
    detail = (series.provenance_detail or (None,))[0]
    kind = f"{label}: {detail}" if detail else label
    return f"{series.values[0]:.0f} g/kWh for the slot from {_when(series.start)} ({kind})"


def _history(series: IntensitySeries) -> str:
    return (
        f"{len(series)} slots of {series.step_minutes} min from {_when(series.start)} "
        f"({_labels(series, 'observed')})"
    )


def _forecast(series: IntensitySeries, asked: float) -> str:
    reach = len(series) * series.step_minutes / 60
    note = "" if reach >= asked else f", short of the {asked:g} h asked"
    return f"{reach:g} h ahead in {series.step_minutes}-min slots{note} ({series.source})"


def _plain(exc: ProviderError) -> str:
    """The error's message without the provider's name and the outcome repeated."""
    text = str(exc)
    _, _, rest = text.partition(": ")
    return (rest or text).removeprefix("plan limit: ")


def _try(need: str, endpoint: str, free: bool, call: Callable[[], str]) -> Probe:
    try:
        return Probe(need, endpoint, free, OK, call())
    except ProviderPlanLimit as exc:
        return Probe(need, endpoint, free, PLAN_LIMIT, _plain(exc))
    except ProviderAuthError as exc:
        return Probe(need, endpoint, free, REJECTED, str(exc))
    except ProviderUnavailable as exc:
        return Probe(need, endpoint, free, "unavailable", str(exc))
    except ProviderDataError as exc:
        return Probe(need, endpoint, free, "bad answer", str(exc))
    except (ProviderError, ValueError) as exc:
        return Probe(need, endpoint, free, "error", str(exc))


def check_signals(
    name: str,
    zone: str,
    *,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    trace_path: str | Path | None = None,
    base_url: str | None = None,
    clock: Clock | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep | None = None,
) -> list[Probe]:
    """Try each endpoint of provider `name` once for `zone`; one Probe per endpoint."""
    now = (clock or utc_now)()

    def fixed_clock() -> datetime:
        return now  # one instant for the whole check

    # Every provider takes these keywords; a dict of mixed values types as dict[str, object].
    http = {"clock": fixed_clock, "transport": transport, "sleep": sleep, "base_url": base_url}
    horizon = float(PROBE_HORIZON_HOURS)
    if name == "electricitymaps":
        # Probed as paid, so every endpoint is really called.
        em = ElectricityMapsProvider(token, plan="paid", **http)  # type: ignore[arg-type]  # see http
        return [
            _try("latest", f"/{em_api.LATEST}", True, lambda: _latest(em.latest(zone))),
            _try(
                "history",
                f"/{em_api.HISTORY}",
                True,
                lambda: _history(em.history(zone, now - timedelta(hours=23), now)),
            ),
            _try(
                "past range",
                f"/{em_api.PAST_RANGE}",
                False,
                lambda: _history(
                    em.history(zone, now - timedelta(days=3), now - timedelta(days=3, hours=-1))
                ),
            ),
            _try(
                "forecast",
                f"/{em_api.FORECAST}",
                False,
                lambda: _forecast(em.forecast(zone, horizon), horizon),
            ),
        ]
    if name == "watttime":
        free = zone.upper() == FREE_REGION
        marginal = WattTimeProvider(username, password, plan="paid", **http)  # type: ignore[arg-type]  # see http
        probes = [
            _try(
                "latest + history (marginal)",
                "/v3/historical co2_moer",
                free,
                lambda: _history(marginal.history(zone, now - timedelta(hours=1), now)),
            ),
            _try(
                "forecast (marginal)",
                "/v3/forecast co2_moer",
                free,
                lambda: _forecast(marginal.forecast(zone, horizon), horizon),
            ),
        ]
        if any(probe.outcome == REJECTED for probe in probes):
            return probes
        average = WattTimeProvider(
            username,
            password,
            signal_type="average",
            plan="paid",
            **http,  # type: ignore[arg-type]  # see http
        )
        average.share_login(marginal)
        probes.append(
            _try(
                "history (average)",
                "/v3/historical co2_aoer",
                False,
                lambda: _history(average.history(zone, now - timedelta(hours=1), now)),
            )
        )
        return probes
    if name == "ukci":
        uk = UkciProvider(**http)  # type: ignore[arg-type]  # see http
        return [
            _try(
                "latest",
                "/intensity (last completed half hour)",
                True,
                lambda: _latest(uk.latest(zone)),
            ),
            _try(
                "history",
                "/intensity/{from}/{to}",
                True,
                lambda: _history(uk.history(zone, now - timedelta(hours=24), now)),
            ),
            _try(
                "forecast",
                "/intensity/{from}/fw48h",
                True,
                lambda: _forecast(uk.forecast(zone, 48), 48),
            ),
        ]
    if name == "trace":
        trace = TraceProvider(trace_path, clock=fixed_clock)
        return [
            _try(
                "latest",
                "local trace (no account)",
                True,
                lambda: _latest(trace.history(zone, now, now + timedelta(minutes=1))),
            ),
            _try(
                "forecast",
                "local trace (no account)",
                True,
                lambda: _forecast(trace.forecast(zone, horizon), horizon),
            ),
        ]
    raise ProviderError(f"unknown carbon provider {name!r}")


# The providers whose accounts have plans.
PLANNED = ("electricitymaps", "watttime")
SIGNALS = {
    "electricitymaps": "average (life-cycle, consumption-based)",
    "watttime": "marginal (co2_moer); average (co2_aoer) as history only",
    "ukci": "average (GB generation mix)",
    "trace": "as recorded in the trace",
}


def advice(name: str, plan: str, zone: str, probes: list[Probe]) -> list[str]:
    """What the probes mean for GREENWINDOW_CARBON_PLAN, one line each."""
    lines: list[str] = []
    if any(probe.outcome == REJECTED for probe in probes):
        lines.append("credentials rejected: check GREENWINDOW_CARBON_TOKEN / _USERNAME / _PASSWORD")
        return lines
    if name not in PLANNED:
        return lines
    # The service reads WattTime's marginal signal; its average is reported, not advised on.
    beyond_free = [probe for probe in probes if not probe.free and "average" not in probe.need]
    reached = [probe.need for probe in beyond_free if probe.outcome == OK]
    limited = [probe.need for probe in probes if probe.outcome == PLAN_LIMIT]
    if plan == "free" and reached:
        lines.append(
            f"this account also reaches {', '.join(reached)}: set GREENWINDOW_CARBON_PLAN=paid "
            "to use it"
        )
    if plan == "paid" and limited:
        lines.append(
            f"plan limit on {', '.join(limited)}: set GREENWINDOW_CARBON_PLAN=free, so the "
            "service uses only what this account has"
        )
    if name == "watttime" and zone.upper() != FREE_REGION and plan == "free":
        lines.append(
            f"the free WattTime plan reads {FREE_REGION} only: for {zone} the service falls "
            "back to its own forecaster on stored history, else a flat conservative intensity"
        )
    return lines


def format_report(
    name: str, zone: str, plan: str, base_url: str | None, probes: list[Probe]
) -> str:
    """The report `greenwindow signals check` prints."""
    plan_note = f"configured plan {plan}" if name in PLANNED else "open API, no plan"
    if name == "trace":
        plan_note = "local trace, no account"
    lines = [
        f"provider {name}, zone {zone}, {plan_note}"
        + (f", base URL {base_url}" if base_url else ""),
        f"signal: {SIGNALS.get(name, '?')}",
    ]
    need_width = max(len(probe.need) for probe in probes)
    endpoint_width = max(len(probe.endpoint) for probe in probes)
    for probe in probes:
        lines.append(
            f"  {probe.need:<{need_width}}  {probe.endpoint:<{endpoint_width}}  "
            f"{probe.outcome}: {probe.summary}"
        )
    lines += advice(name, plan, zone, probes)
    return "\n".join(lines)


def usable(probes: list[Probe]) -> bool:
    """Whether the service can read observed intensity at all with this account."""
    return any(probe.outcome == OK for probe in probes) and not any(
        probe.outcome == REJECTED for probe in probes
    )
