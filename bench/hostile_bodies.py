"""Resident memory of a `greenwindow serve` process under unauthenticated large JSON bodies,
and how long `GET /v1/jobs` takes while slow-body clients hold connections.

    python bench/hostile_bodies.py                  # 32 MiB bodies, 30 slow clients
    python bench/hostile_bodies.py --mib 256 --slow-clients 100

Each body is `[{},{},...]` sent to PUT /v1/zones/artifacts/tariff without a key, once with
a Content-Length and once chunked; the figures are the server's VmRSS (Linux /proc) before
and after. Slow clients send a POST /v1/jobs with a valid key, then one body byte a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ADMIN_TOKEN = "bench-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, int, int]]:
    """A `greenwindow serve` subprocess on a fresh SQLite file; yields (url, port, pid)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GREENWINDOW_DATA_DIR": tmp, "GREENWINDOW_ADMIN_TOKEN": ADMIN_TOKEN}
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port)]
            + ["--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            yield url, port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=20)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _send_raw(port: int, head: bytes, body: bytes, chunked: bool) -> str:
    """Send headers and as much of the body as the server reads; its status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):
            step = 1 << 20
            for start in range(0, len(body), step):
                piece = body[start : start + step]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        with contextlib.suppress(OSError):
            return sock.recv(200).split(b"\r\n", 1)[0].decode()
    return "(closed)"


def _hostile_body(mib: int) -> bytes:
    return b"[" + b"{}," * (mib * 1024 * 1024 // 3) + b"{}]"


def memory(url: str, port: int, pid: int, mib: int) -> None:
    body = _hostile_body(mib)
    print(f"server RSS at start: {_rss_mb(pid):.0f} MB")
    path = (
        b"PUT /v1/zones/artifacts/tariff HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    )
    status = _send_raw(port, path + b"Content-Length: %d\r\n\r\n" % len(body), body, False)
    time.sleep(0.5)
    print(f"{mib} MiB with Content-Length, no key: {status}; RSS {_rss_mb(pid):.0f} MB")
    status = _send_raw(port, path + b"Transfer-Encoding: chunked\r\n\r\n", body, True)
    time.sleep(0.5)
    print(f"{mib} MiB chunked, no key: {status}; RSS {_rss_mb(pid):.0f} MB")


def slow_clients(url: str, port: int, count: int) -> None:
    team = httpx.post(
        f"{url}/v1/teams",
        json={"name": "bench"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    key = team["api_key"]
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n{"
        )
        sockets.append(sock)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        timings = []
        statuses = []
        for _ in range(5):
            started = time.perf_counter()
            try:
                statuses.append(
                    httpx.get(
                        f"{url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=10
                    ).status_code
                )
            except httpx.TimeoutException:
                statuses.append("timed out after 10 s")
            timings.append(time.perf_counter() - started)
        health = httpx.get(f"{url}/healthz", timeout=10).status_code
        print(
            f"{count} slow-body clients connected: GET /v1/jobs {sorted(set(map(str, statuses)))}, "
            f"median {sorted(timings)[2] * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms; "
            f"/healthz {health}"
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="size of each hostile body")
    parser.add_argument("--slow-clients", type=int, default=30)
    args = parser.parse_args()
    with _server() as (url, port, pid):
        memory(url, port, pid, args.mib)
        slow_clients(url, port, args.slow_clients)


if __name__ == "__main__":
    main()
