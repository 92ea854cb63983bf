"""How many streams one worker holds open to one provider at once.

Every open stream holds an upstream connection for its whole length, so the
HTTP client's connection limit is the worker's limit on concurrent streams.
The SDKs' own defaults were 1,000 (openai, anthropic) and 100 (the httpx
transport under google-genai): streams beyond them waited for a connection
until they timed out. Driven through each real SDK against its wire-level fake,
with answers slow enough that every stream is open at the same time."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers.adapters import get_adapter
from providers.types import ChatRequest, Message
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.asyncio
HTTP_FAKES = {"openai": FakeOpenAIServer, "anthropic": FakeAnthropicServer, "gemini": FakeGeminiServer}
# Five chunks a second apart: each stream stays open 4 s. A stream that waited
# for another's connection sees its first text after >= 4 s; one that did not,
# well before (starting 120 streams takes ~1 s of CPU on a loaded machine).
SLOW = FakeReply(text="a b c d e", chunk_size=2, chunk_delay=1.0)
STREAM_SECONDS = 4.0


@pytest.fixture(scope="module", params=sorted(HTTP_FAKES))
def fake(request):
    server = HTTP_FAKES[request.param]().start()
    yield server
    server.stop()


async def _first_events_at(adapter, model: str, streams: int) -> list[float]:
    """When each of `streams` concurrent streams saw its first text, from the start."""
    start = time.monotonic()
    request = ChatRequest(model=model, messages=[Message(role="user", content="count")])

    async def one() -> float:
        first = None
        async for event in adapter.stream(request):
            if event.type == "delta" and first is None:
                first = time.monotonic() - start
            assert event.type != "error", event.error
        return first

    return await asyncio.gather(*(one() for _ in range(streams)))


async def test_a_worker_holds_more_streams_than_the_sdks_default_pools(fake):
    fake.default_reply = SLOW
    adapter = get_adapter(fake.adapter_config(read_timeout=30))
    firsts = await _first_events_at(adapter, fake.model, 120)  # over google-genai's old cap of 100
    assert max(firsts) < STREAM_SECONDS - 1, sorted(firsts)[-5:]  # none waited for another's connection


async def test_the_max_connections_option_caps_a_providers_connections():
    """Read in one place for every kind (providers/adapters/base.py upstream_limits)."""
    fake = FakeOpenAIServer().start()
    adapter = get_adapter(fake.adapter_config(read_timeout=30, options={"max_connections": 3}))
    try:
        fake.default_reply = FakeReply(text="a b c d e", chunk_size=2, chunk_delay=0.5)  # open 2 s
        firsts = sorted(await _first_events_at(adapter, fake.model, 4))
    finally:
        await adapter.aclose()
        fake.stop()
    assert firsts[2] < 1 and firsts[3] >= 1.5  # the fourth waited for one of the three to end
