"""What the server benches share: a free loopback port, waiting for a server to answer."""

from __future__ import annotations

import socket
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 60.0) -> None:
    """Until GET url/healthz answers (a server still starting refuses connections)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            httpx.get(url + "/healthz")
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")
