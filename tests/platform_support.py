"""Production servers (`python -m config.serve`) for the shutdown and
multi-instance tests: started on a chosen or free port, stopped with SIGTERM
as an init system or an operator would."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ARTIFACTS, ROOT, _free_port, server_env


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM: the server drains (config/draining.py) and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> int:
        self.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def start_serve(database_url: str, *, name: str, port: int | None = None, workers: int = 1, grace: float = 30,
                **env: str) -> Served:
    ARTIFACTS.mkdir(exist_ok=True)
    port = port or _free_port()
    log_path = ARTIFACTS / f"{name}-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--grace", str(grace), "--log-level", "info"],
        cwd=ROOT, env=server_env(database_url, **env), stdout=log_path.open("a"), stderr=subprocess.STDOUT)
    served = Served(process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"config.serve exited early:\n{served.log_text()[-3000:]}")
        if healthy(served.url):
            return served
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"config.serve did not serve /health in 60 s:\n{served.log_text()[-3000:]}")


def refuses_connections(port: int) -> bool:
    """Nothing accepts on the port any more (the server stopped listening)."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0
