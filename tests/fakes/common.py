"""What every fake provider shares: scripted replies, injected faults, a server thread.

A fake speaks one provider's real wire format (tests/fakes/<kind>_server.py) so the
provider's official SDK runs unchanged against it. Tests script what the next
calls answer with `script(...)`; what the fake received is in `requests`.
Fakes listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn


@dataclass
class FakeToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""  # filled by the fake in its own id style when empty


@dataclass
class FakeReply:
    """A successful answer: text and/or tool calls, with the usage to report."""

    text: str = "Hello from the fake provider."
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    input_tokens: int = 12
    output_tokens: int = 8
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # input tokens written to the provider's prompt cache (Anthropic reports them)
    reasoning_tokens: int = 0
    finish: Literal["stop", "length", "tool_calls", "content_filter"] | None = None
    chunk_size: int = 4  # characters per streamed text delta
    chunk_delay: float = 0.0  # seconds between streamed chunks

    @property
    def finish_reason(self) -> str:
        if self.finish:
            return self.finish
        return "tool_calls" if self.tool_calls else "stop"

    def text_chunks(self) -> list[str]:
        n = max(1, self.chunk_size)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)]


FaultKind = Literal[
    "status",  # answer with `status` (and Retry-After when retry_after is set)
    "stall",  # accept the request and send nothing for `seconds`
    "cut",  # stream `after_chunks` chunks of the reply, then drop the connection
    "stall_stream",  # stream `after_chunks` chunks, then go silent for `seconds`
    "malformed",  # 200 with a body that is not valid JSON / not a valid event
]


@dataclass
class Fault:
    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    message: str = "injected fault"
    error_type: str | None = None  # the provider's own error type/code, if needed
    seconds: float = 30.0
    after_chunks: int = 2
    reply: FakeReply | None = None  # for cut / stall_stream: what is streamed first


Script = FakeReply | Fault


class FakeProviderServer:
    """Base: a Starlette app served by uvicorn in a thread, with a script queue.

    Subclasses implement `build_app()` returning an ASGI app that answers using
    `next_script()` and records each request through `record(...)`.
    When the script queue is empty the fake answers `default_reply`.
    """

    def __init__(self) -> None:
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body"}
        self.default_reply = FakeReply()
        self.port = _free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------
    def script(self, *items: Script) -> None:
        with self._lock:
            self._scripts.extend(items)

    def next_script(self) -> Script:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.default_reply

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
        self.default_reply = FakeReply()

    def record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "at": time.monotonic()})

    @property
    def call_count(self) -> int:
        return len(self.requests)

    # -- lifecycle -----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def build_app(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> "FakeProviderServer":
        config = uvicorn.Config(
            self.build_app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=type(self).__name__)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sleep_or_disconnect(seconds: float) -> None:
    """Used by `stall` faults: wait, but let uvicorn cancel us on shutdown."""
    await asyncio.sleep(seconds)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; `data` is JSON-encoded unless it is already a str."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector for `text`: the same text, the same vector."""
    digest = hashlib.sha256(text.encode()).digest()
    values = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    return [round(v, 6) for v in values]
