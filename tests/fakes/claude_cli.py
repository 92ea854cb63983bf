"""FakeClaudeCLI: the harness around the fake Claude CLI (tests/fakes/claude_cli/fake_claude.py).

The adapter is given the fake as the SDK's `cli_path`, so claude-agent-sdk runs
unchanged: it spawns the fake, which speaks stream-json over stdin/stdout. The
fake is a stdlib-only script started by a launcher written into a temp dir
(`#!<sys.executable>`, chmod +x); the script queue and the log live there too,
as files, because every call is a separate process.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeReply, Fault, Script

SCRIPT = Path(__file__).with_name("claude_cli") / "fake_claude.py"


class FakeClaudeCLI:
    kind = "claude_agent"
    model = "claude-sonnet-4-6"
    scriptable = True
    # Every tool_use block of the turn is read from the assistant messages, so
    # several calls in one turn come back together.
    reports_reasoning_tokens = False

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.default_reply = FakeReply()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "FakeClaudeCLI":
        self.dir = Path(tempfile.mkdtemp(prefix="fake-claude-"))
        launcher = self.dir / "claude"
        launcher.write_text(
            f"#!{sys.executable} -S\n"
            "import runpy\n"
            f"runpy.run_path({str(SCRIPT)!r}, init_globals={{'STATE_DIR': {str(self.dir)!r}}}, run_name='__main__')\n"
        )
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.reset()
        return self

    def stop(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def cli_path(self) -> str:
        assert self.dir is not None, "start() first"
        return str(self.dir / "claude")

    # -- scripting ---------------------------------------------------------
    def script(self, *items: Script) -> None:
        with self._locked():
            queue = self._read("script.json", [])
            queue += [_encode(item) for item in items]
            self._write("script.json", queue)

    def reset(self) -> None:
        self.default_reply = FakeReply()
        with self._locked():
            self._write("script.json", [])
            self._write("default.json", _encode(self.default_reply))
            (self.dir / "log.jsonl").write_text("")

    def context_length_fault(self) -> Fault:
        return Fault("status", status=400, message="Prompt is too long", error_type="prompt_too_long")

    # -- what the CLI received ---------------------------------------------
    @property
    def log(self) -> list[dict[str, Any]]:
        path = self.dir / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log_text(self) -> str:
        """The raw log, for asserting that something never reached it."""
        return (self.dir / "log.jsonl").read_text()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """One entry per CLI run: argv, env names, cwd, stdin messages, exit."""
        runs: dict[int, dict[str, Any]] = {}
        for record in self.log:
            run = runs.setdefault(record["pid"], {"pid": record["pid"], "stdin": [], "events": []})
            if record["event"] == "start":
                run.update(argv=record["argv"], env_names=record["env_names"], cwd=record["cwd"],
                           anthropic_base_url=record["anthropic_base_url"])
            elif record["event"] == "stdin":
                run["stdin"].append(record["line"])
            else:
                run["events"].append(record)
        return list(runs.values())

    @property
    def call_count(self) -> int:
        return len(self.requests)

    def adapter_config(self, credential: str = "", **overrides: Any) -> AdapterConfig:
        fields: dict[str, Any] = {
            "provider_id": zlib.crc32(b"fake-claude-cli") % 100_000 + 9_000_000,
            "name": "claude_agent",
            "kind": self.kind,
            "credential": credential,
            "options": {"cli_path": self.cli_path},
            "read_timeout": 10,
        }
        fields.update(overrides)
        return AdapterConfig(**fields)

    # -- files ---------------------------------------------------------------
    def _locked(self):
        return _FileLock(self.dir / "script.lock")

    def _read(self, name: str, default: Any) -> Any:
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else default

    def _write(self, name: str, value: Any) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.dir / name)


class _FileLock:
    """The same flock the fake CLI takes before popping the queue."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _encode(item: Script) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    if isinstance(item, Fault):
        data["kind"] = item.kind  # a Fault has "kind"; a FakeReply has not
    return data
