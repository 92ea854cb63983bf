"""Processes the benchmark starts, and what /proc says about them (CPU, memory,
file descriptors, connections). Each started process leads its own session, so
stopping it stops exactly its workers and nothing else on the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Proc:
    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - open for the process's life
        self.popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def pids(self) -> list[int]:
        """This process and all its descendants (the server's workers)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.popen.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self) -> dict[int, float]:
        out = {}
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def memory(self) -> dict[int, dict[str, int]]:
        """Per process: rss and peak rss (VmHWM) in KiB, open file descriptors."""
        out = {}
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            values = {}
            for line in status.splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1])
            out[pid] = {"rss_kib": values.get("VmRSS", 0), "peak_kib": values.get("VmHWM", 0), "fds": fds}
        return out

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log_file.close()


def wait_http(url: str, *, timeout: float = 60.0, proc: Proc | None = None, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited; see {proc.log}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
            last = str(error)
        except OSError as error:
            last = str(error)
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s: {last}")


def established(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[2] == wanted and parts[3] == "01":
            count += 1
    return count


def listening(port: int) -> int:
    """Listening sockets on 127.0.0.1:port (from /proc/net/tcp): one per worker of config.serve."""
    wanted = f"0100007F:{port:04X}"
    return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
               if line.split()[1] == wanted and line.split()[3] == "0A")


def wait_listening(port: int, count: int, *, timeout: float = 60.0) -> None:
    """Until `count` sockets listen on the port. config.serve's workers listen only once their
    application is loaded, so /health answering means one worker is ready, not all of them;
    a load that starts before the others listen would pin its connections to the first."""
    deadline = time.monotonic() + timeout
    while listening(port) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} listeners on port {port} not ready after {timeout:.0f}s")
        time.sleep(0.1)
