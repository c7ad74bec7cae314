"""A local fake of the carbon providers' APIs: real HTTP on 127.0.0.1, recorded shapes.

Each fake answers like the real service does for one plan: a free Electricity Maps token
gets `/latest` and `/history` and the real `{"error":"Invalid auth-token"}` 401 elsewhere;
a free WattTime account reads CAISO_NORTH only and gets the real "Invalid scope" 403
elsewhere. Values are generated around the wall clock (or a given clock), so the service
and the CLI can run against it unchanged, through GREENWINDOW_CARBON_BASE_URL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.carbon_fakes import recorded

Handler = Callable[[dict[str, str], dict[str, str]], tuple[int, Any]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _daily(moment: datetime) -> float:
    """A clean night and a dirty afternoon: enough shape for the forecaster to follow."""
    return 250.0 + 100.0 * (moment.hour >= 12)


class FakeCarbonServer:
    """Serves `routes` (path -> handler(query, headers)) and records every request."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
                parts = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
                server.requests.append((parts.path, query))
                handler = server.routes.get(parts.path)
                if handler is None:
                    # A route ending in "/" serves every path under it (UK CI puts times in
                    # the path); the handler reads the path from the "path" query key.
                    prefixes = [p for p in server.routes if p.endswith("/")]
                    match = max(
                        (p for p in prefixes if parts.path.startswith(p)), key=len, default=None
                    )
                    if match is not None:
                        handler = server.routes[match]
                        query = {**query, "path": parts.path[len(match) :]}
                if handler is None:
                    status, body = 404, {"error": f"no route for {parts.path}"}
                else:
                    status, body = handler(query, dict(self.headers))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output quiet

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def start(self) -> FakeCarbonServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serving(routes: dict[str, Handler]) -> Iterator[FakeCarbonServer]:
    server = FakeCarbonServer(routes).start()
    try:
        yield server
    finally:
        server.stop()


# -- Electricity Maps -----------------------------------------------------------------


def electricitymaps_routes(
    plan: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    token: str = "em-token",
    answer_zone: str | None = None,
) -> dict[str, Handler]:
    """Routes under /v3 for a token on `plan`; `answer_zone` makes every answer another zone's."""
    refused = (401, recorded("electricitymaps_401.json"))

    def authorised(headers: dict[str, str]) -> bool:
        return headers.get("auth-token") == token

    def latest(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        if not authorised(headers):
            return refused
        hour = clock().replace(minute=0, second=0, microsecond=0)
        return 200, {
            "zone": answer_zone or query.get("zone"),
            "carbonIntensity": _daily(hour),
            "datetime": _iso(hour),
            "updatedAt": _iso(clock()),
            "emissionFactorType": "lifecycle",
            "isEstimated": True,
            "estimationMethod": "TIME_SLICER_AVERAGE",
        }

    def history(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        if not authorised(headers):
            return refused
        zone = answer_zone or query.get("zone")
        last = clock().replace(minute=0, second=0, microsecond=0)
        items = [
            {
                "zone": zone,
                "carbonIntensity": _daily(moment),
                "datetime": _iso(moment),
                "isEstimated": hours_back == 0,
                "estimationMethod": "TIME_SLICER_AVERAGE" if hours_back == 0 else None,
            }
            for hours_back in range(23, -1, -1)
            for moment in [last - timedelta(hours=hours_back)]
        ]
        return 200, {"zone": zone, "history": items}

    def paid_only(
        handler: Callable[[dict[str, str]], tuple[int, Any]],
    ) -> Handler:
        def route(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
            if not authorised(headers) or plan != "paid":
                return refused  # the real answer to a free token on a paid endpoint
            return handler(query)

        return route

    def forecast(query: dict[str, str]) -> tuple[int, Any]:
        hours = int(query.get("horizonHours", "24"))
        first = clock().replace(minute=0, second=0, microsecond=0)
        points = [
            {
                "carbonIntensity": _daily(first + timedelta(hours=i)),
                "datetime": _iso(first + timedelta(hours=i)),
            }
            for i in range(hours)
        ]
        return 200, {"zone": answer_zone or query.get("zone"), "forecast": points}

    def past_range(query: dict[str, str]) -> tuple[int, Any]:
        start = datetime.fromisoformat(query["start"])
        end = datetime.fromisoformat(query["end"])
        count = int((end - start) / timedelta(hours=1))
        points = [
            {"zone": query.get("zone"), "carbonIntensity": _daily(moment), "datetime": _iso(moment)}
            for i in range(count)
            for moment in [start + timedelta(hours=i)]
        ]
        return 200, {"zone": answer_zone or query.get("zone"), "data": points}

    return {
        "/v3/carbon-intensity/latest": latest,
        "/v3/carbon-intensity/history": history,
        "/v3/carbon-intensity/forecast": paid_only(forecast),
        "/v3/carbon-intensity/past-range": paid_only(past_range),
    }


# -- WattTime --------------------------------------------------------------------------


def watttime_routes(
    plan: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> dict[str, Handler]:
    """Routes of a WattTime account on `plan` (free: CAISO_NORTH only, co2_moer forecasts)."""
    scope = (403, recorded("watttime_403.json"))
    meta = {"units": "lbs_co2_per_mwh", "data_point_period_seconds": 300}

    def login(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        return 200, recorded("watttime_login.json")

    def allowed(query: dict[str, str]) -> bool:
        return plan == "paid" or query.get("region") == "CAISO_NORTH"

    def five_minutes(start: datetime, count: int) -> list[dict[str, Any]]:
        first = start.replace(second=0, microsecond=0) - timedelta(minutes=start.minute % 5)
        return [
            {"point_time": (first + timedelta(minutes=5 * i)).isoformat(), "value": 900 + i % 7}
            for i in range(count)
        ]

    def historical(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        if not allowed(query):
            return scope
        start = datetime.fromisoformat(query["start"])
        end = min(datetime.fromisoformat(query["end"]), clock())
        count = max(0, int((end - start) / timedelta(minutes=5)))
        return 200, {
            "data": five_minutes(start, count),
            "meta": {**meta, "signal_type": query.get("signal_type")},
        }

    def forecast(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        if query.get("signal_type") != "co2_moer":
            return 400, {"error": f"no forecast for signal_type {query.get('signal_type')}"}
        if not allowed(query):
            return scope
        hours = int(query.get("horizon_hours", "24"))
        return 200, {
            "data": five_minutes(clock(), hours * 12),
            "meta": {**meta, "signal_type": "co2_moer"},
        }

    return {"/login": login, "/v3/historical": historical, "/v3/forecast": forecast}


# -- UK Carbon Intensity -----------------------------------------------------------------


def ukci_routes(*, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Handler]:
    """National routes: `/intensity` is the last completed half hour, with an actual;
    ranges carry actuals up to the present and forecasts after it."""

    def half_hour(moment: datetime) -> datetime:
        return moment.replace(minute=moment.minute - moment.minute % 30, second=0, microsecond=0)

    def period(start: datetime) -> dict[str, Any]:
        settled = start + timedelta(minutes=30) <= clock()
        value = _daily(start) / 2
        return {
            "from": start.strftime("%Y-%m-%dT%H:%MZ"),
            "to": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%MZ"),
            "intensity": {
                "forecast": value + 3,
                "actual": value if settled else None,
                "index": "low",
            },
        }

    def latest(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        return 200, {"data": [period(half_hour(clock()) - timedelta(minutes=30))]}

    def ranges(query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        first_text, _, second = query["path"].partition("/")
        start = datetime.fromisoformat(first_text)
        if second in ("fw24h", "fw48h"):
            end = start + timedelta(hours=int(second[2:4]))
        else:
            end = datetime.fromisoformat(second)
        if end - start > timedelta(days=14):
            return 400, {"error": {"code": "400 Bad Request", "message": "range too long"}}
        count = int((end - start) / timedelta(minutes=30))
        return 200, {"data": [period(start + timedelta(minutes=30 * i)) for i in range(count)]}

    return {"/intensity": latest, "/intensity/": ranges}
