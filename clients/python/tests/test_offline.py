"""ep_client without a platform: what it sends (through httpx.MockTransport),
how it maps error envelopes to exceptions, how it parses streams, and that it
is a standalone package."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import socket
import subprocess
import sys
from decimal import Decimal

import ep_client
import httpx
import pytest
from ep_client import (
    APIConnectionError,
    AsyncExecutionPlatformClient,
    AuthenticationError,
    BudgetExceededError,
    ExecutionPlatformClient,
    ExecutionPlatformError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
    error_from_body,
    new_run_id,
)
from ep_client.client import StreamParser

SERVER_PACKAGES = ("django", "ninja", "channels", "gateway", "api", "dashboard", "budgets", "personas", "providers",
                   "accounts", "config")

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "model": "demo/demo",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 2}}}
WEATHER_BARE = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
ANSWER_HEADERS = {"x-ep-cost-usd": "0.00001234", "x-ep-provider": "demo", "x-ep-model": "demo",
                  "x-ep-persona": "architect", "x-request-id": "req_1"}


def sse(*chunks: dict | str) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


class Recorder:
    """An httpx.MockTransport handler that keeps what was sent and answers `respond(request)`."""

    def __init__(self, respond) -> None:
        self.respond, self.requests = respond, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def mock_client(respond, **options) -> tuple[ExecutionPlatformClient, Recorder]:
    recorder = Recorder(respond)
    options.setdefault("api_key", "ep-test")
    return ExecutionPlatformClient("http://platform.test", transport=httpx.MockTransport(recorder), **options), recorder


# -- the package -----------------------------------------------------------------------------


def test_the_installed_version_is_the_package_version():
    assert importlib.metadata.version("execution-platform-client") == ep_client.__version__


def test_importing_the_client_imports_nothing_of_the_server(tmp_path):
    probe = ("import sys, ep_client; print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))")
    out = subprocess.run([sys.executable, "-c", probe, *SERVER_PACKAGES], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_exported():
    for name in ep_client.__all__:
        assert getattr(ep_client, name) is getattr(ep_client.client, name)


# -- what is sent ----------------------------------------------------------------------------


def test_chat_sends_the_persona_messages_tags_and_openai_parameters():
    ep, sent = mock_client(lambda r: httpx.Response(200, json=ANSWER, headers=ANSWER_HEADERS),
                           persona="architect", run_id="run_1")
    response = ep.chat("Design", step=3, system="Be brief.", temperature=0.2, tools=[WEATHER_BARE])
    request, body = sent.requests[0], sent.body()
    assert (request.method, request.url.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer ep-test"
    assert (request.headers["x-ep-run-id"], request.headers["x-ep-step"]) == ("run_1", "3")
    assert body == {"model": "architect", "temperature": 0.2,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Design"}],
                    "tools": [{"type": "function", "function": WEATHER_BARE}]}
    assert (response.text, response.cost_usd, response.provider, response.persona, response.request_id) == (
        "hello", Decimal("0.00001234"), "demo", "architect", "req_1")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.cached_tokens) == (3, 1, 2)



def test_a_call_overrides_the_persona_and_run_and_a_direct_call_names_provider_and_model():
    ep, sent = mock_client(lambda r: httpx.Response(200, json=ANSWER), persona="architect")
    ep.chat("a", persona="reviewer", run_id="run_x")
    ep.chat("b", provider="demo", model="demo")
    ep.chat("c", model="demo/other")
    assert [sent.body(i)["model"] for i in range(3)] == ["reviewer", "demo/demo", "demo/other"]
    assert sent.requests[0].headers["x-ep-run-id"] == "run_x" and "x-ep-run-id" not in sent.requests[1].headers


def test_a_bare_provider_override_uses_its_first_listed_model_looked_up_once():
    def respond(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "other/x"}, {"id": "demo/demo-large"}]})
        return httpx.Response(200, json=ANSWER)

    ep, sent = mock_client(respond, persona="architect", provider_override="demo")
    ep.chat("a")
    ep.chat("b")
    assert [r.url.path for r in sent.requests] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert sent.body()["model"] == "demo/demo-large"


def test_a_stream_asks_for_usage_and_parses_events():
    body = sse(delta("Hel"), delta("lo", "stop"), {"choices": [], "usage": {"prompt_tokens": 2,
                                                                           "completion_tokens": 2}}, "[DONE]")
    ep, sent = mock_client(lambda r: httpx.Response(200, content=body, headers=ANSWER_HEADERS), persona="developer")
    events = list(ep.stream("hi"))
    assert sent.body()["stream"] is True and sent.body()["stream_options"] == {"include_usage": True}
    assert [(e.type, e.text) for e in events] == [("delta", "Hel"), ("delta", "lo"), ("usage", ""), ("done", "")]
    assert (events[-1].finish_reason, events[-1].usage.output_tokens, events[-1].request_id) == ("stop", 2, "req_1")


def test_a_stream_that_ends_without_done_raises():
    ep, _ = mock_client(lambda r: httpx.Response(200, content=sse(delta("Hel"))), persona="developer")
    with pytest.raises(UpstreamError) as caught:
        list(ep.stream("hi"))
    assert caught.value.code == "stream_incomplete"


def test_an_error_chunk_inside_a_stream_raises_its_exception():
    error = {"error": {"type": "api_error", "code": "provider_unavailable", "message": "down", "request_id": "req_9"}}
    parser = StreamParser(httpx.Headers())
    assert parser.feed("data: " + json.dumps(delta("Hel")))[0].text == "Hel"
    with pytest.raises(UpstreamError) as caught:
        parser.feed("data: " + json.dumps(error))
    assert (caught.value.status, caught.value.code, caught.value.request_id) == (None, "provider_unavailable", "req_9")


def test_the_async_client_sends_the_same_request():
    recorder = Recorder(lambda r: httpx.Response(200, json=ANSWER, headers=ANSWER_HEADERS))

    async def chat():
        async with AsyncExecutionPlatformClient("http://platform.test/v1", "architect", api_key="ep-test",
                                                run_id="run_a", transport=httpx.MockTransport(recorder)) as ep:
            return await ep.chat("hi", step="one")

    assert asyncio.run(chat()).text == "hello"
    assert recorder.requests[0].url == "http://platform.test/v1/chat/completions"
    assert recorder.requests[0].headers["x-ep-step"] == "one" and recorder.body()["model"] == "architect"


def test_arguments_are_checked_before_anything_is_sent(monkeypatch):
    ep, sent = mock_client(lambda r: httpx.Response(200, json=ANSWER))
    with pytest.raises(ValueError, match="persona"):
        ep.chat("hi")
    with pytest.raises(ValueError, match="needs a provider"):
        ep.chat("hi", model="gpt-4")
    with pytest.raises(ValueError, match="stream()"):
        ep.chat("hi", persona="architect", stream=True)
    assert sent.requests == []
    monkeypatch.delenv("EP_API_KEY", raising=False)
    with pytest.raises(AuthenticationError) as caught:
        ExecutionPlatformClient("http://platform.test", "architect")
    assert caught.value.code == "missing_api_key"


def test_new_run_ids_are_unique_and_prefixed():
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("run_") for i in ids)


# -- error mapping ---------------------------------------------------------------------------


def envelope(code: str, type: str = "invalid_request_error") -> dict:
    return {"error": {"type": type, "code": code, "message": f"{code} happened", "request_id": "req_e"}}


@pytest.mark.parametrize(("status", "code", "error_class"), [
    (401, "invalid_api_key", AuthenticationError),
    (403, "direct_model_not_allowed", PermissionDeniedError),
    (404, "model_not_found", NotFoundError),
    (429, "rate_limited", RateLimitError),
    (429, "budget_exceeded", BudgetExceededError),
    (400, "invalid_request", InvalidRequestError),
    (413, "request_too_large", InvalidRequestError),
    (502, "provider_unavailable", UpstreamError),
    (None, "provider_unavailable", UpstreamError),  # an error inside a 200 stream
])
def test_an_error_envelope_becomes_the_exception_of_its_status_and_code(status, code, error_class):
    error = error_from_body(status, envelope(code))
    assert type(error) is error_class and isinstance(error, ExecutionPlatformError)
    assert (error.status, error.code, error.message, error.request_id) == (status, code, f"{code} happened", "req_e")
    assert str(error) == f"{code}: {code} happened (request req_e)"


def test_budget_exceeded_is_not_a_rate_limit_and_rate_limits_carry_retry_after():
    spent = error_from_body(429, envelope("budget_exceeded", "rate_limit_error"), {"Retry-After": "60"})
    assert isinstance(spent, BudgetExceededError) and not isinstance(spent, RateLimitError)
    limited = error_from_body(429, envelope("rate_limited", "rate_limit_error"), {"Retry-After": "2"})
    assert isinstance(limited, RateLimitError) and limited.retry_after == 2.0


def test_a_body_that_is_not_an_envelope_still_gives_a_typed_error():
    ep, _ = mock_client(lambda r: httpx.Response(502, text="Bad Gateway", headers={"x-request-id": "req_p"}),
                        persona="architect")
    with pytest.raises(UpstreamError) as caught:
        ep.chat("hi")
    assert (caught.value.status, caught.value.code, caught.value.request_id) == (502, "http_502", "req_p")


def test_an_unreachable_platform_is_a_connection_error_after_the_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    ep = ExecutionPlatformClient(f"http://127.0.0.1:{port}", "architect", api_key="ep-x", max_retries=2, backoff=0.01)
    with pytest.raises(APIConnectionError) as caught:
        ep.chat("hi")
    assert caught.value.code == "connection_error"
