"""Run the service under uvicorn: in a background thread (`serve_in_thread`, for
`greenwindow demo` and the tests that talk to a real server), or as several processes on one
port (`serve_processes`, for `greenwindow serve --workers N`).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# How long stopping processes may take to finish their requests before they are killed.
STOP_GRACE_SECONDS = 30.0


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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port that other processes may bind too (SO_REUSEPORT).

    The kernel then hands each new connection to one of the sockets bound to the port,
    spreading connections evenly. With one socket shared by every process instead, the
    process that wakes first accepts a whole burst of connections, and with keep-alive
    clients one process ends up serving most of the load.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def serve_processes(count: int, command: Sequence[str], *, poll_s: float = 0.2) -> int:
    """Run `count` copies of `command` (each a service process on its own SO_REUSEPORT
    socket) until SIGINT or SIGTERM, or until one of them exits; then stop the rest.

    Returns 0 after a signal, else the exit code of the process that ended on its own (1
    if that was 0): a service process never stops by itself, so one that does (a port
    taken, a database refusing connections at start) fails the whole command.
    """
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children = [subprocess.Popen(list(command)) for _ in range(count)]
    ended: subprocess.Popen[bytes] | None = None
    try:
        while not stop_requested and ended is None:
            ended = next((child for child in children if child.poll() is not None), None)
            time.sleep(poll_s)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if ended is None:
        return 0
    return ended.returncode or 1
