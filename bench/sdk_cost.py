"""The openai SDK's own cost per call against the mock (no gateway): how much
of a request's CPU is the SDK and its HTTP client.

    python bench/sdk_cost.py --port 9100 [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import openai

MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]


async def main(port: int, calls: int) -> dict:
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.AsyncOpenAI(api_key="sk-mock", base_url=base, max_retries=0)
    aio = openai.AsyncOpenAI(api_key="sk-mock", base_url=base, max_retries=0,
                             http_client=openai.DefaultAioHttpClient(follow_redirects=False))
    raw = httpx.AsyncClient(base_url=base)
    body = json.dumps({"model": "mock-model", "messages": MESSAGES, "max_tokens": 64})
    out = {}
    for label, call in (
        ("openai SDK, chat.completions.create", lambda: client.chat.completions.create(
            model="mock-model", messages=MESSAGES, max_tokens=64)),
        ("openai SDK, streamed (20 chunks)", lambda: _drain(client, MESSAGES)),
        ("openai SDK on aiohttp, chat.completions.create", lambda: aio.chat.completions.create(
            model="mock-model", messages=MESSAGES, max_tokens=64)),
        ("openai SDK on aiohttp, streamed (20 chunks)", lambda: _drain(aio, MESSAGES)),
        ("openai SDK on aiohttp, client.post (dict body, dict reply)", lambda: aio.post(
            "/chat/completions", body={"model": "mock-model", "messages": MESSAGES, "max_tokens": 64},
            cast_to=dict)),
        ("openai SDK on aiohttp, client.post streamed (dict chunks)", lambda: _drain_post(aio, MESSAGES)),
        ("bare httpx POST + json.loads", lambda: _bare(raw, body)),
    ):
        for _ in range(100):
            await call()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await call()
        out[label] = {"cpu_ms_per_call": 1000 * (time.process_time() - cpu0) / calls,
                      "wall_ms_per_call": 1000 * (time.perf_counter() - wall0) / calls}
    await client.close()
    await aio.close()
    await raw.aclose()
    return out


async def _drain(client, messages) -> None:
    stream = await client.chat.completions.create(model="mock-model", messages=messages, max_tokens=64, stream=True,
                                                  stream_options={"include_usage": True})
    async for _ in stream:
        pass


async def _drain_post(client, messages) -> None:
    stream = await client.post(
        "/chat/completions", cast_to=dict, stream=True, stream_cls=openai.AsyncStream[dict],
        body={"model": "mock-model", "messages": messages, "max_tokens": 64, "stream": True,
              "stream_options": {"include_usage": True}})
    async for _ in stream:
        pass


async def _bare(raw: httpx.AsyncClient, body: str) -> None:
    response = await raw.post("/chat/completions", content=body, headers={"Content-Type": "application/json"})
    json.loads(response.content)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.port, args.calls)), indent=1))
