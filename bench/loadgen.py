"""The benchmark's async client (raw asyncio, uvloop when present), for what wrk
cannot measure: time to first byte of SSE streams, and the mixed run (streams,
cancelled streams, provider errors, plain requests) with exact counts.

Every run is bounded: by a request count and by a deadline, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

TERMINAL = b"\r\n0\r\n\r\n"


@dataclass
class Target:
    host: str
    port: int
    path: str
    headers: dict[str, str]
    model: str
    error_model: str = ""

    def request(self, *, stream: bool, model: str | None = None) -> bytes:
        body = json.dumps({"model": model or self.model, "stream": stream, "max_tokens": 64,
                           "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}).encode()
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Outcome:
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    failures: int = 0

    def count(self, key: str) -> None:
        self.statuses[key] = self.statuses.get(key, 0) + 1


class Conn:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, payload: bytes, *, cancel_after_first: bool = False) -> tuple[int, float, float]:
        """Send one request; (status, ttfb, total). TTFB = first body byte."""
        if self.writer is None:
            await self.open()
        start = time.perf_counter()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        chunked = b"transfer-encoding: chunked" in lower
        length = None
        at = lower.find(b"content-length:")
        if at >= 0:
            length = int(lower[at + 15:lower.find(b"\r\n", at)])
        first = await self.reader.read(65536) if (chunked or length) else b""
        ttfb = time.perf_counter() - start
        if cancel_after_first:
            self.close()  # the client walks away mid-stream
            return status, ttfb, ttfb
        if chunked:
            buf = first
            while not buf.endswith(TERMINAL) and buf != b"0\r\n\r\n":
                more = await self.reader.read(65536)
                if not more:
                    raise ConnectionError("closed mid-body")
                buf = buf[-16:] + more
        elif length is not None and len(first) < length:
            await self.reader.readexactly(length - len(first))
        if b"connection: close" in lower:
            self.close()
        return status, ttfb, time.perf_counter() - start


async def _worker(target: Target, kinds: list[str], out: Outcome, budget: list[int], deadline: float) -> None:
    conn = Conn(target)
    rng = random.Random(id(out) ^ id(conn))
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            kind = rng.choice(kinds)
            stream = kind in ("stream", "cancel")
            model = target.error_model if kind == "error" else None
            out.sent += 1
            try:
                status, ttfb, total = await asyncio.wait_for(
                    conn.exchange(target.request(stream=stream, model=model), cancel_after_first=kind == "cancel"),
                    timeout=30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                out.failures += 1
                conn.close()
                continue
            out.count(f"{kind}:{status}")
            if kind == "stream" and status == 200:
                out.ttfb.append(ttfb)
            out.total.append(total)
    finally:
        conn.close()


async def run(target: Target, *, kinds: list[str], concurrency: int, requests: int, seconds: float) -> Outcome:
    out = Outcome()
    budget = [requests]
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_worker(target, kinds, out, budget, deadline) for _ in range(concurrency)))
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "n": len(ordered)}


def run_sync(target: Target, **kwargs) -> Outcome:
    try:
        import uvloop

        return uvloop.run(run(target, **kwargs))
    except ImportError:
        return asyncio.run(run(target, **kwargs))
