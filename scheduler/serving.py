"""Serve an ASGI app under a real uvicorn server in a background thread.

One implementation for everything that needs the service on a loopback socket inside the
current process: `greenwindow demo` and the tests that talk to a real server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serve_in_thread(
    app: Any,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    http: Any = "auto",
    start_timeout_s: float = 30.0,
) -> Iterator[str]:
    """Run `app` on host:port (0: a free port) until the block ends; yields its base URL.

    `http` is uvicorn's protocol choice (e.g. the header-timeout protocol `greenwindow serve`
    uses). Raises RuntimeError if the server has not started within `start_timeout_s`
    (a port in use, a failing lifespan).
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=http)
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the service did not start on {host}:{port} (port in use?)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
