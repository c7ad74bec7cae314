"""The one in-process uvicorn runner the demo and the socket tests share."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from scheduler.serving import serve_in_thread


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_serves_on_a_free_port_and_stops_at_the_end_of_the_block() -> None:
    with serve_in_thread(_app()) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert httpx.get(f"{url}/ping").json() == {"pong": "yes"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/ping", timeout=2)


# uvicorn ends its thread with SystemExit when it cannot bind; the caller gets the error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_port_in_use_is_an_error_naming_it() -> None:
    with serve_in_thread(_app()) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match=f"did not start on 127.0.0.1:{port}"):
            with serve_in_thread(_app(), port):
                pass
