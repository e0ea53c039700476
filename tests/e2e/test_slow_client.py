"""A client that sends half a request's headers and waits is cut off (`serve
--header-timeout`), and the server goes on answering others."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CUSTATE = Path(sys.executable).parent / "custate"


def test_late_headers_close_the_connection(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}
    store = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["serve", "--port", str(port), "--store", store, "--header-timeout", "1"]
    proc = subprocess.Popen(
        [str(CUSTATE), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of headers
        slow.settimeout(30)
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server, nothing answered
        waited = time.monotonic() - started
        slow.close()
        assert waited < 25, waited  # the bound is 1 s; generous for a loaded machine
        # A kept-alive client that answers in time is not cut off, and others are served.
        with httpx.Client(base_url=base) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
