"""Names a caller sends (the model, X-Persona, the run id and step, from
headers or metadata) are checked at the edge on every surface, before any
provider is called: a newline in a direct model name used to split the
X-EP-Model response header after the provider had answered (a 500 for a paid
call). Each refusal is a 400 with a precise code and one Usage row."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from budgets.models import Usage
from providers.models import Model, Provider
from tests.streaming_support import chat_frame, open_socket

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def direct(fake, world):
    """A provider named `fake` for direct provider/model calls, the fake OpenAI server behind it."""
    fake.reset()
    provider = Provider.objects.create(name="fake", kind="openai", base_url=fake.base_url + "/v1")
    provider.set_credential("sk-fake")
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    return fake


def post(live, path: str, key: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(live.url + path, json=body, timeout=30, headers={"Authorization": f"Bearer {key}", **headers})


def code_of(response: httpx.Response) -> str:
    error = response.json()["error"]
    return error.get("details", {}).get("error_code") or error["code"]


def test_a_newline_in_a_direct_model_name_is_refused_before_the_provider_on_every_endpoint(live, world, direct):
    bad = f"fake/{direct.model}\r\nX-Injected: yes"
    refusals = {
        "openai": post(live, "/v1/chat/completions", world.direct_key, {"model": bad, "messages": HI}),
        "openai stream": post(live, "/v1/chat/completions", world.direct_key,
                              {"model": bad, "messages": HI, "stream": True}),
        "anthropic": post(live, "/v1/messages", world.direct_key, {"model": bad, "messages": HI, "max_tokens": 20}),
        "native": post(live, "/api/v1/chat", world.direct_key, {"persona": bad, "messages": HI}),
        "a space": post(live, "/v1/chat/completions", world.direct_key, {"model": "fake/gpt 4", "messages": HI}),
    }

    async def socket_refusal():
        async with open_socket(live, key=world.direct_key) as ws:
            await ws.send(chat_frame("w", f"fake/{direct.model}\u2028", "hi"))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    frame = asyncio.run(socket_refusal())
    assert {name: (r.status_code, code_of(r)) for name, r in refusals.items()} == dict.fromkeys(
        refusals, (400, "invalid_model"))
    assert (frame["type"], frame["error"]["code"], frame["error"]["param"]) == ("error", "invalid_model", "model")
    assert direct.call_count == 0
    assert "X-Injected" not in str(refusals["openai"].headers)
    rows = Usage.objects.all()
    assert len(rows) == len(refusals) + 1  # one row each, the socket's included
    assert {(r.status, r.http_status, r.error_code) for r in rows} == {("refused", 400, "invalid_model")}

    served = post(live, "/v1/chat/completions", world.direct_key, {"model": f"fake/{direct.model}", "messages": HI})
    assert served.status_code == 200 and served.headers["X-EP-Model"] == direct.model


BAD_LABELS = {  # case -> (headers, metadata, expected code)
    "X-Persona with a tab": ({"X-Persona": "archi\ttect"}, None, "invalid_persona_header"),
    "X-EP-Run-Id with a tab": ({"X-EP-Run-Id": "run\t1"}, None, "invalid_run_id"),
    "X-EP-Run-Id too long": ({"X-EP-Run-Id": "r" * 101}, None, "invalid_run_id"),
    "X-EP-Step with DEL": ({"X-EP-Step": "step\x7f"}, None, "invalid_step"),
    "metadata.run_id with a newline": ({}, {"run_id": "run\n2026-01-01 forged"}, "invalid_run_id"),
    "metadata.step with an escape": ({}, {"step": "\x1b[2Jstep"}, "invalid_step"),
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/api/v1/chat"])
def test_persona_run_and_step_labels_are_checked_on_every_endpoint(live, world, direct, path):
    for case, (headers, metadata, code) in BAD_LABELS.items():
        body = {"persona": "architect"} if path == "/api/v1/chat" else {"model": "architect", "max_tokens": 20}
        body["messages"] = HI
        if metadata:
            body["metadata"] = metadata
        response = post(live, path, world.red_key, body, **headers)
        assert (case, response.status_code, code_of(response)) == (case, 400, code), response.text
    assert Usage.objects.filter(status="refused").count() == len(BAD_LABELS)
    ok = post(live, path, world.red_key, {"model": "architect", "persona": "architect", "messages": HI,
                                          "max_tokens": 20, "metadata": {"step": "étape ✓"}},
              **{"X-EP-Run-Id": "=run 42"})
    assert ok.status_code == 200, ok.text
    row = Usage.objects.get(status="ok")
    assert (row.run_id, row.step) == ("=run 42", "étape ✓")  # any text without control characters
