"""Helpers shared by the streaming tests (websocket, SSE, live events)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect


def ws_url(live, path: str) -> str:
    return live.url.replace("http://", "ws://") + path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def open_socket(live, path: str = "/ws/v1/chat", *, key: str | None = None, **kwargs):
    headers = dict(kwargs.pop("additional_headers", {}))
    if key:
        headers.update(bearer(key))
    return connect(ws_url(live, path), additional_headers=headers, open_timeout=5, **kwargs)


def chat_frame(request_id, persona: str, prompt: str, **extra) -> str:
    return json.dumps({"type": "chat", "id": request_id, "persona": persona,
                       "messages": [{"role": "user", "content": prompt}], **extra})


async def frames_until_terminal(ws: ClientConnection, ids: set, timeout: float = 10) -> list[dict]:
    """Every frame until each id in `ids` has had its `done` or `error`.

    A `duplicate_id` error refuses the new frame only: the request already in
    flight under that id goes on, so it does not end the id (docs/STREAMING.md)."""
    import asyncio

    frames, open_ids = [], set(ids)
    async with asyncio.timeout(timeout):
        while open_ids:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] == "done" or (frame["type"] == "error" and frame["error"]["code"] != "duplicate_id"):
                open_ids.discard(frame["id"])
    return frames


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def route_persona_to_fake(fake, slug: str = "via-openai"):
    """A persona whose one step is the fake OpenAI server, with table prices."""
    from personas.models import Persona, RouteStep
    from providers.models import Model, Provider

    provider = Provider(name="openai", kind="openai", base_url=fake.base_url + "/v1", read_timeout=10)
    provider.set_credential("sk-test-streaming")
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug=slug)
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return persona
