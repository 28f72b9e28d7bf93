"""What the server benches share: a free loopback port, waiting for a server to answer."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

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


def tree_rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process and (unless children=False) its children (uvicorn's workers), MB."""
    pids, total = [pid], 0.0
    if children:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return round(total, 1)
