"""What a request must get past before a handler runs: size, credentials, timeouts, admission.

The order matters and is the point of this module:

1. A declared `Content-Length` over the route's limit is refused (413) before anything else.
2. A `/v1` request that carries a body must present a known credential (admin token, fleet
   token, a team key or a worker token) before a single byte of its body is read. Without
   this, FastAPI would parse a JSON body before the route's authentication ran, and anyone
   could make the process hold a body's worth of parsed objects.
3. The body of an ordinary request (at most `max_request_bytes`) is received whole, within
   `body_timeout_seconds` and with no pause longer than `body_idle_timeout_seconds`, before
   the request takes a handling slot: a client trickling its body holds a socket, never a
   slot. Upload routes (exactly `POST /v1/datasets` and
   `PUT /v1/jobs/{job_id}/artifacts/{name}`) stream their bodies to disk instead; they take a
   slot of their own, smaller pool and their bodies obey the idle timeout.
4. At most `concurrency` requests are handled at once (see `Admission`); the thread and
   connection pools are sized from the same setting (`Settings.worker_threads`,
   `Settings.db_connections`), so an admitted request never waits for either.

Header read timeouts are the server's job: `header_timeout_protocol` gives uvicorn an HTTP
protocol that closes connections whose request headers do not arrive in time.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scheduler.db.session import read_scope
from scheduler.known_credentials import KnownCredentials
from scheduler.settings import Settings

# The only routes that take bodies larger than max_request_bytes, by method and exact path.
UPLOAD_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"/v1/datasets")),
    ("PUT", re.compile(r"/v1/jobs/[^/]+/artifacts/[^/]+")),
)

# Answered without a handling slot: single-step and needed most when the service is busy.
EXEMPT_FROM_ADMISSION = frozenset({"/healthz", "/metrics"})


def is_upload_route(method: str, path: str) -> bool:
    """Whether this method and path is one of the streamed upload routes."""
    return any(method == m and pattern.fullmatch(path) for m, pattern in UPLOAD_ROUTES)


class Admission:
    """Counts requests being handled, per pool, and says how long the API pool has been full.

    "Full for a while" means every slot is taken and none has been given back since: each
    release (a request finished) restarts the clock, so a busy but moving service is healthy.
    """

    def __init__(
        self,
        *,
        limit: int,
        upload_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._api = asyncio.Semaphore(limit)
        self._uploads = asyncio.Semaphore(upload_limit)
        self._clock = clock
        self.in_use = 0
        self._full_since: float | None = None

    @asynccontextmanager
    async def slot(self, *, upload: bool = False) -> AsyncIterator[None]:
        """Hold a handling slot of the API pool (or of the upload pool)."""
        if upload:
            async with self._uploads:
                yield
            return
        async with self._api:
            self.in_use += 1
            if self.in_use >= self.limit:
                self._full_since = self._clock()
            try:
                yield
            finally:
                self.in_use -= 1
                self._full_since = None

    def saturated_for(self) -> float:
        """Seconds every API slot has been busy with none given back; 0 when one is free."""
        if self._full_since is None or self.in_use < self.limit:
            return 0.0
        return max(0.0, self._clock() - self._full_since)


class _Refusal(Exception):
    def __init__(
        self, status: int, detail: str, field: str, *, retry_after: int | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.field = field
        self.retry_after = retry_after


class _ClientGone(Exception):
    """The client disconnected while sending its body; there is no one to answer."""


def _too_large(limit: int) -> _Refusal:
    return _Refusal(413, f"request body larger than {limit} bytes", "body")


def _timed_out(what: str) -> _Refusal:
    return _Refusal(408, f"request body not received in time ({what})", "body")


async def _answer(send: Send, refusal: _Refusal) -> None:
    headers = {"Connection": "close"}
    if refusal.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if refusal.retry_after is not None:
        headers["Retry-After"] = str(refusal.retry_after)
    response = JSONResponse(
        {"detail": refusal.detail, "field": refusal.field},
        status_code=refusal.status,
        headers=headers,
    )
    await response({"type": "http"}, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _announces_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return _header(scope, b"transfer-encoding") is not None


def _bearer(scope: Scope) -> str | None:
    header = (_header(scope, b"authorization") or b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _same(presented: str, configured: str | None) -> bool:
    return configured is not None and hmac.compare_digest(presented.encode(), configured.encode())


def credential_is_known(session_factory: Any, settings: Settings, token: str) -> bool:
    """Whether the token is the admin or fleet token, a live team key or a worker's token.

    Only whether the caller is known is decided here; what it may do is the route's business.
    Nothing is written (a key's last use is recorded by the route's own authentication), so
    `session_factory` is the read path's: on SQLite the check never waits for the writer.
    """
    from scheduler.teams.service import find_active_key
    from scheduler.workers import service as workers

    if _same(token, settings.admin_token) or _same(token, settings.worker_token):
        return True
    if len(token) > 512:
        return False
    with read_scope(session_factory) as session:
        if token.startswith(f"{workers.TOKEN_PREFIX}_"):
            return workers.authenticate(session, token) is not None
        return find_active_key(session, token) is not None


class RequestGate:
    """Pure ASGI middleware applying the steps in this module's docstring, in order."""

    def __init__(
        self, app: ASGIApp, *, settings: Settings, admission: Admission, session_factory: Any
    ) -> None:
        self.app = app
        self.settings = settings
        self.admission = admission
        self.session_factory = session_factory
        self.known = KnownCredentials()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        upload = is_upload_route(scope["method"], path)
        limit = self.settings.max_upload_bytes if upload else self.settings.max_request_bytes
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            if path.startswith("/v1/") and _announces_body(scope):
                await self._authenticate_first(scope)
            if path in EXEMPT_FROM_ADMISSION:
                await self.app(scope, self._streamed(receive, limit), tracked_send)
                return
            if upload:
                async with self.admission.slot(upload=True):
                    await self.app(scope, self._streamed(receive, limit), tracked_send)
                return
            body = await self._receive_whole(receive, limit)
            async with self.admission.slot():
                await self.app(scope, _replay(body, receive), tracked_send)
        except _Refusal as refusal:
            if not started:
                await _answer(send, refusal)
        except _ClientGone:
            return

    async def _authenticate_first(self, scope: Scope) -> None:
        token = _bearer(scope)
        if token is None:
            raise _Refusal(
                401, "missing API key: send 'Authorization: Bearer <key>'", "Authorization"
            )
        if self.known.recently_valid(token):
            return  # see known_credentials.py: the route still checks the database
        # A database lookup uses a thread and, on SQLite, the write lock: it is handled work,
        # so it takes a slot like any other (briefly).
        async with self.admission.slot():
            try:
                known = await run_in_threadpool(
                    credential_is_known, self.session_factory, self.settings, token
                )
            except PoolTimeout:
                # The application's handlers do not reach this middleware: answer as they do.
                raise _Refusal(
                    503,
                    "service busy: no database connection free; retry shortly",
                    "database",
                    retry_after=1,
                ) from None
            except OperationalError:
                raise _Refusal(
                    503, "database unavailable or busy; retry shortly", "database", retry_after=2
                ) from None
        if not known:
            raise _Refusal(401, "invalid or revoked API key", "Authorization")
        self.known.remember(token)

    async def _receive_whole(self, receive: Receive, limit: int) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout_seconds
        idle = self.settings.body_idle_timeout_seconds
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _timed_out("GREENWINDOW_BODY_TIMEOUT_SECONDS")
            try:
                message = await asyncio.wait_for(receive(), min(idle, remaining))
            except TimeoutError:
                which = (
                    "GREENWINDOW_BODY_IDLE_TIMEOUT_SECONDS"
                    if idle < remaining
                    else "GREENWINDOW_BODY_TIMEOUT_SECONDS"
                )
                raise _timed_out(which) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _streamed(self, receive: Receive, limit: int) -> Receive:
        idle = self.settings.body_idle_timeout_seconds
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), idle)
            except TimeoutError:
                raise _timed_out("GREENWINDOW_BODY_IDLE_TIMEOUT_SECONDS") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        return limited_receive


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the already received body to the app, then pass on what the server says next."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """An HTTP protocol for uvicorn that closes a connection whose request headers are late.

    The clock starts when the connection opens and again after each response (keep-alive);
    it stops once a request's headers are complete. Bodies are timed by `RequestGate`.
    It is uvicorn's httptools protocol (C parser, several times cheaper per request than
    h11) with a timer around the header phase.
    """

    # Seconds a client has to send its request headers: set by `header_timeout_protocol`.
    header_timeout_s: float
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request whose headers already arrived is being handled: no clock.
        if not self.transport.is_closing() and self._between_requests():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """`HeaderTimeoutProtocol` with the header timeout fixed at `seconds`."""

    class FixedHeaderTimeoutProtocol(HeaderTimeoutProtocol):
        header_timeout_s = seconds

    return FixedHeaderTimeoutProtocol
