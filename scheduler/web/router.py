"""Dashboard pages (overview, budgets, one job), their JSON data, and the login flow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.templating import Jinja2Templates

from scheduler.deps import NowDep, Principal, SchedulingDep, SessionDep, SettingsDep
from scheduler.errors import NotFound
from scheduler.web import auth, data
from scheduler.web.format import TEMPLATE_FILTERS

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(TEMPLATE_FILTERS)

# Scripts and styles only from our own static files: embedded JSON data is never executed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ZoneQuery = Annotated[str | None, Query(min_length=1, max_length=64)]
HoursQuery = Annotated[float, Query(gt=0, le=168)]
HistoryQuery = Annotated[float, Query(ge=0, le=336)]
AttemptQuery = Annotated[int | None, Query(ge=1, le=1_000_000)]


def _page(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    session_id = auth.cookie_session_id(request)
    if session_id is not None and "csrf" not in context:
        # The sign-out form on every signed-in page posts this back.
        context = {**context, "csrf": auth.session_csrf_token(session_id)}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _login_page(
    request: Request, *, error: str | None = None, status_code: int = 401, next_path: str = ""
) -> Response:
    response = HTMLResponse("")
    csrf = auth.login_csrf_token(request, response)
    context = {"error": error, "next": next_path or request.url.path, "csrf": csrf}
    page = _page(request, "login.html", context, status_code)
    for cookie in response.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", cookie)
    if error is not None:
        auth.forget(page)
    return page


def _without_token(request: Request) -> str:
    """The current path and query, minus `token`, so a secret is never sent back."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    query = urlencode(rest)
    return request.url.path + (f"?{query}" if query else "")


class ShowInstead(Exception):
    """Raised by the viewer dependencies: answer with this response instead of the page."""

    def __init__(self, response: Response) -> None:
        super().__init__("dashboard viewer not signed in")
        self.response = response


def _viewer(request: Request, session: SessionDep, now: NowDep, settings: SettingsDep) -> Principal:
    """The principal behind the session cookie (else the login page or a redirect)."""
    if "token" in request.query_params:
        # Addresses end up in access logs, proxies and browser history: keys never go there.
        raise ShowInstead(
            _login_page(
                request,
                error="Tokens are not accepted in the address; paste yours into this form.",
                status_code=400,
                next_path=_without_token(request),
            )
        )
    session_id = auth.cookie_session_id(request)
    if session_id is None:
        # A redirect, not a 401 page: browsers log a 401 document as an error.
        raise ShowInstead(
            RedirectResponse(
                "/dashboard/login?" + urlencode({"next": _without_token(request)}),
                status_code=303,
            )
        )
    principal = auth.principal_for_session(session, settings, session_id, now=now)
    if principal is None:
        raise ShowInstead(
            _login_page(request, error="Your session is no longer valid; sign in again.")
        )
    return principal


# Who is looking at a dashboard page.
ViewerDep = Annotated[Principal, Depends(_viewer)]


def _api_viewer(
    request: Request, session: SessionDep, now: NowDep, settings: SettingsDep
) -> Principal:
    principal = auth.principal_for_session(
        session, settings, auth.cookie_session_id(request), now=now
    )
    if principal is None:
        raise ShowInstead(
            JSONResponse({"detail": "sign in to the dashboard first"}, status_code=401)
        )
    return principal


# Who is asking for a dashboard page's JSON data.
ApiViewerDep = Annotated[Principal, Depends(_api_viewer)]


def _forbidden(why: str) -> Response:
    return PlainTextResponse(why, status_code=403, headers=SECURITY_HEADERS)


def _inside_dashboard(path: str) -> str:
    """Only ever redirect inside the dashboard, never to an address slipped into a form."""
    if not path.startswith("/dashboard") or "//" in path or "\\" in path:
        return "/dashboard"
    return "/dashboard" if path.startswith("/dashboard/login") else path


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, next_path: Annotated[str, Query(alias="next", max_length=300)] = ""
) -> Response:
    """The sign-in form."""
    return _login_page(request, status_code=200, next_path=_inside_dashboard(next_path))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=512)],
    next_path: Annotated[str, Form(alias="next", max_length=300)] = "/dashboard",
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Check the token and open a server-side session; the cookie holds only its id."""
    if not auth.same_origin(request):
        return _forbidden("sign-in from another site refused")
    if not auth.login_csrf_ok(request, csrf):
        return _login_page(
            request,
            error="The form had expired; sign in again.",
            status_code=403,
            next_path=_inside_dashboard(next_path),
        )
    session_id = auth.open_session(session, settings, token, now=now)
    if session_id is None:
        return _login_page(request, error="That token was not accepted.")
    response = RedirectResponse(_inside_dashboard(next_path), status_code=303)
    auth.remember(response, session_id, secure=request.url.scheme == "https")
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path=auth.COOKIE_PATH)
    return response


@router.post("/logout")
def logout(
    request: Request,
    session: SessionDep,
    now: NowDep,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Revoke the dashboard session and forget its cookie."""
    if not auth.same_origin(request) or not auth.session_csrf_ok(request, csrf):
        return _forbidden("sign-out without this page's form refused")
    auth.close_session(session, auth.cookie_session_id(request), now=now)
    response = RedirectResponse("/dashboard/login", status_code=303)
    auth.forget(response)
    return response


@router.get("", response_class=HTMLResponse)
def overview_page(
    request: Request,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    zone: ZoneQuery = None,
    hours: HoursQuery = 36,
    history_hours: HistoryQuery = 24,
) -> Response:
    """Carbon intensity with the planned and running jobs on it, and the job table."""
    zone = zone or settings.zone
    view = data.overview(
        request, session, viewer, zone=zone, now=now, hours=hours, history_hours=history_hours
    )
    api = f"/dashboard/api/overview?zone={zone}&hours={hours:g}&history_hours={history_hours:g}"
    return _page(
        request,
        "overview.html",
        {"view": view, "who": viewer.label, "active": "overview", "api": api},
    )


@router.get("/budgets", response_class=HTMLResponse)
def budgets_page(request: Request, session: SessionDep, now: NowDep, viewer: ViewerDep) -> Response:
    """Each team's budget burn: actual, committed and forecast against the limit."""
    view = data.budget_overview(session, viewer, now=now)
    return _page(
        request,
        "budgets.html",
        {"view": view, "who": viewer.label, "active": "budgets", "api": "/dashboard/api/budgets"},
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: str,
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    now: NowDep,
    scheduling: SchedulingDep,
) -> Response:
    """One job: power and intensity timelines, telemetry charts, energy breakdown and
    efficiency, attempts and events."""
    try:
        view = data.job_detail(session, viewer, job_id, scheduling=scheduling, now=now)
    except NotFound:
        return _page(
            request,
            "not_found.html",
            {"who": viewer.label, "active": "", "what": "job"},
            status_code=404,
        )
    return _page(
        request,
        "job.html",
        {"view": view, "who": viewer.label, "active": "", "api": f"/dashboard/api/jobs/{job_id}"},
    )


@router.get("/api/overview")
def overview_data(
    request: Request,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    viewer: ApiViewerDep,
    zone: ZoneQuery = None,
    hours: HoursQuery = 36,
    history_hours: HistoryQuery = 24,
) -> Response:
    """The overview's data as JSON (the page refreshes its chart from it)."""
    zone = zone or settings.zone
    view = data.overview(
        request, session, viewer, zone=zone, now=now, hours=hours, history_hours=history_hours
    )
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@router.get("/api/budgets")
def budgets_data(session: SessionDep, now: NowDep, viewer: ApiViewerDep) -> Response:
    """The budgets page's data as JSON."""
    return JSONResponse(
        data.budget_overview(session, viewer, now=now), headers={"Cache-Control": "no-store"}
    )


@router.get("/api/jobs/{job_id}")
def job_data(
    job_id: str, session: SessionDep, viewer: ApiViewerDep, now: NowDep, scheduling: SchedulingDep
) -> Response:
    """The job page's data as JSON."""
    view = data.job_detail(session, viewer, job_id, scheduling=scheduling, now=now)
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@router.get("/api/jobs/{job_id}/live")
def job_live_data(
    job_id: str, session: SessionDep, viewer: ApiViewerDep, now: NowDep, scheduling: SchedulingDep
) -> Response:
    """The job page's live figures (state, progress, watts, kWh and CO2e so far, telemetry,
    warnings), polled while the job runs. A GET that changes nothing, so no CSRF token."""
    view = data.job_live(session, viewer, job_id, scheduling=scheduling, now=now)
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@router.get("/api/jobs/{job_id}/telemetry")
def job_telemetry_data(
    job_id: str, session: SessionDep, viewer: ApiViewerDep, attempt: AttemptQuery = None
) -> Response:
    """An attempt's stored telemetry history as the job page's chart series (default: the
    latest attempt with one), bounded in points, GPUs and warnings."""
    view = data.telemetry_charts(session, viewer, job_id, attempt=attempt)
    return JSONResponse(view, headers={"Cache-Control": "no-store"})
