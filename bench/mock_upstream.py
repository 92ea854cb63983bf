"""A mock OpenAI upstream for the benchmark: raw asyncio (uvloop when present),
HTTP/1.1 keep-alive, loopback only, cheap enough never to be the bottleneck.

POST .../chat/completions answers in OpenAI's wire format:
- a chat.completion JSON body, or with `"stream": true` an SSE stream of 20
  chat.completion.chunk events (+ a usage chunk and [DONE]), chunked encoding;
- a 503 OpenAI error envelope when the model name contains "error" (provider
  errors for the mixed run).
Responses are prebuilt bytes: the mock parses only the request line, headers
and Content-Length, and looks for the stream flag in the body.

    python bench/mock_upstream.py --port 9100 [--chunk-delay-ms 0]
    python bench/mock_upstream.py --port 9101 --first-token-ms 1000 --chunks 60 --chunk-delay-ms 500

The second form answers streams as real models do: nothing for a second (no
headers either), then a chunk every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

CHUNKS = 20
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(data)) + data


def _sse_event(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    line = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(line), line)


def _stream_parts(chunks: int = CHUNKS) -> list[bytes]:
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": "mock-model"}
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    parts = [head + _sse_event(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "tok0 "},
                                                    "finish_reason": None}]})]
    for i in range(1, chunks - 1):
        parts.append(_sse_event(base | {"choices": [{"index": 0, "delta": {"content": f"tok{i} "},
                                                     "finish_reason": None}]}))
    parts.append(_sse_event(base | {"choices": [{"index": 0, "delta": {"content": "end."}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    parts[-1] += _sse_event(base | {"choices": [], "usage": usage}) + _sse_event("[DONE]") + b"0\r\n\r\n"
    return parts


def _error() -> bytes:
    data = json.dumps({"error": {"message": "mock upstream overloaded", "type": "server_error",
                                 "code": "overloaded", "param": None}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(data)) + data


COMPLETION = _completion()
STREAM_PARTS = _stream_parts()
STREAM_WHOLE = b"".join(STREAM_PARTS)
ERROR = _error()
MODELS = json.dumps({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0,
                                                  "owned_by": "mock"}]}).encode()
MODELS_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(MODELS), MODELS)


_RUNNING: set[asyncio.Task] = set()


class MockProtocol(asyncio.Protocol):
    chunk_delay = 0.0
    first_token_delay = 0.0
    stream_parts = STREAM_PARTS

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at)
                length = int(lower[at + 15:stop if stop > 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4:total]
            self.buffer = self.buffer[total:]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"GET"):
            self.transport.write(MODELS_RESPONSE)
            return
        if b'"mock-error"' in body:
            self.transport.write(ERROR)
            return
        if _STREAM_RE.search(body):
            if self.chunk_delay > 0 or self.first_token_delay > 0:
                task = asyncio.get_running_loop().create_task(self._slow_stream())
                _RUNNING.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(_RUNNING.discard)
            else:
                self.transport.write(STREAM_WHOLE)
            return
        self.transport.write(COMPLETION)

    async def _slow_stream(self) -> None:
        await asyncio.sleep(self.first_token_delay)
        for i, part in enumerate(self.stream_parts):
            if self.transport.is_closing():
                return
            if i:
                await asyncio.sleep(self.chunk_delay)
            self.transport.write(part)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(MockProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    args = parser.parse_args()
    MockProtocol.chunk_delay = args.chunk_delay_ms / 1000
    MockProtocol.first_token_delay = args.first_token_ms / 1000
    MockProtocol.stream_parts = _stream_parts(args.chunks)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
