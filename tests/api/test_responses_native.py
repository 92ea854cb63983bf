"""/v1/responses carried natively to OpenAI's own Responses API, logprobs on
/v1/responses, and a Claude Agent route behind it: the official openai SDK
against a live gateway, the provider side through the wire-level fakes.

An openai provider calls upstream POST /responses when its `responses_api`
option says so ("native": requests that came on our /v1/responses; "always":
every request); the fake records which path each call reached."""

from __future__ import annotations

import json

import openai
import pytest

from budgets.models import Usage
from gateway.models import StoredResponse
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.api.test_responses_api import CITY_SCHEMA, WEATHER, sdk
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.claude_cli import FakeClaudeCLI
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.openai_server import FakeOpenAIServer

LOGPROBS = "message.output_text.logprobs"


@pytest.fixture(scope="module")
def fakes():
    started = {"openai": FakeOpenAIServer().start(), "anthropic": FakeAnthropicServer().start(),
               "claude_agent": FakeClaudeCLI().start()}
    yield started
    for fake in started.values():
        fake.stop()


def _persona(slug: str, provider: Provider, model: str) -> None:
    Model.objects.create(provider=provider, name=model, input_price=1, output_price=2)
    RouteStep.objects.create(persona=Persona.objects.create(slug=slug), provider=provider, model=model)


def _openai(fake: FakeOpenAIServer, name: str, **options) -> Provider:
    provider = Provider(name=name, kind="openai", base_url=fake.base_url + "/v1", read_timeout=5, options=options)
    provider.set_credential("sk-test-openai")
    provider.save()
    return provider


@pytest.fixture
def routes(fakes, world):
    """`native` (OpenAI, Responses upstream for /v1/responses), `always` (every
    request), `chat-only` (the default for a compatible server), `claude`, `anthropic`."""
    for fake in fakes.values():
        fake.reset()
    openai_fake = fakes["openai"]
    _persona("native", _openai(openai_fake, "openai-native", responses_api="native"), openai_fake.model)
    _persona("always", _openai(openai_fake, "openai-always", responses_api="always"), "o3-pro")
    _persona("chat-only", _openai(openai_fake, "openai-compatible"), openai_fake.model)
    claude = Provider.objects.create(name="claude", kind="claude_agent",
                                     options={"cli_path": fakes["claude_agent"].cli_path}, read_timeout=20)
    _persona("claude", claude, fakes["claude_agent"].model)
    anthropic = Provider(name="anthropic", kind="anthropic", base_url=fakes["anthropic"].base_url, read_timeout=5)
    anthropic.set_credential("sk-ant-test")
    anthropic.save()
    _persona("anthropic", anthropic, fakes["anthropic"].model)
    return fakes


def _upstream(fake: FakeOpenAIServer) -> list[str]:
    return [r["path"] for r in fake.requests]


# -- native: a Responses request reaches OpenAI as a Responses request ------------------------


def test_a_response_goes_to_openais_responses_api_with_everything_it_asked(live, world, routes):
    fake = routes["openai"]
    fake.script(FakeReply(text='{"city": "Oslo", "sunny": true}', cached_tokens=4, reasoning_tokens=3))
    response = sdk(live, world.red_key).responses.create(
        model="native", input="Weather in Oslo as JSON", instructions="Be exact.", max_output_tokens=200,
        tools=[WEATHER], tool_choice="auto", reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "weather", "schema": CITY_SCHEMA, "strict": True}})
    assert _upstream(fake) == ["/v1/responses"]
    sent = fake.requests[-1]["body"]
    assert sent["store"] is False  # the gateway keeps the conversation; nothing stays at OpenAI
    assert sent["input"] == [{"role": "system", "content": "Be exact."},
                             {"role": "user", "content": "Weather in Oslo as JSON"}]
    assert sent["tools"] == [{"type": "function", "name": "get_weather", "description": "Weather in a city",
                              "parameters": WEATHER["parameters"], "strict": True}]
    assert sent["text"]["format"] == {"type": "json_schema", "name": "weather", "schema": CITY_SCHEMA,
                                      "strict": True}
    assert (sent["reasoning"], sent["max_output_tokens"], sent["tool_choice"]) == ({"effort": "low"}, 200, "auto")
    assert json.loads(response.output_text) == {"city": "Oslo", "sunny": True}
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    row = Usage.objects.get()
    assert (row.provider, row.status, row.cached_tokens, row.reasoning_tokens) == ("openai-native", "ok", 4, 3)
    assert StoredResponse.objects.filter(id=response.id).exists()


def test_a_tool_round_trip_goes_native_as_function_call_items(live, world, routes):
    fake = routes["openai"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}),
                                               FakeToolCall("get_weather", {"city": "Rome"})]),
                FakeReply(text="Oslo is sunny, Rome too."))
    client = sdk(live, world.red_key)
    first = client.responses.create(model="native", input="Weather in Oslo and Rome?", tools=[WEATHER])
    assert [json.loads(item.arguments)["city"] for item in first.output] == ["Oslo", "Rome"]
    outputs = [{"type": "function_call_output", "call_id": item.call_id, "output": "sunny"} for item in first.output]
    final = client.responses.create(model="native", input=outputs, previous_response_id=first.id, tools=[WEATHER])
    assert final.output_text == "Oslo is sunny, Rome too."
    sent = fake.requests[-1]["body"]["input"]
    assert [item.get("type", "message") for item in sent] == [
        "message", "function_call", "function_call", "function_call_output", "function_call_output"]
    assert [item["call_id"] for item in sent[1:]] == [item.call_id for item in first.output] * 2


def test_a_native_stream_arrives_as_typed_events_with_tool_calls(live, world, routes):
    fake = routes["openai"]
    fake.script(FakeReply(text="Sunny in Rome.", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"})]))
    with sdk(live, world.red_key).responses.stream(model="native", input="Rome?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert _upstream(fake) == ["/v1/responses"] and fake.requests[-1]["body"]["stream"] is True
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    assert final.output_text == "Sunny in Rome." and json.loads(final.output[1].arguments) == {"city": "Rome"}
    row = Usage.objects.get()
    assert row.stream and (row.input_tokens, row.output_tokens) == (final.usage.input_tokens,
                                                                    final.usage.output_tokens)


def test_a_native_stream_cut_midway_ends_in_error_and_failed_events(live, world, routes):
    routes["openai"].script(Fault("cut", after_chunks=3, reply=FakeReply(text="this answer will be cut short")))
    events = list(sdk(live, world.red_key).responses.create(model="native", input="go", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert Usage.objects.get().status == "error" and not StoredResponse.objects.exists()


def test_an_incomplete_native_answer_is_incomplete_here_too(live, world, routes):
    routes["openai"].script(FakeReply(text="A long answer that", finish="length"))
    response = sdk(live, world.red_key).responses.create(model="native", input="Everything", max_output_tokens=5)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_chat_completions_stay_on_chat_for_a_native_provider(live, world, routes):
    fake = routes["openai"]
    sdk(live, world.red_key).chat.completions.create(model="native", messages=[{"role": "user", "content": "hi"}])
    assert _upstream(fake) == ["/v1/chat/completions"]


def test_a_responses_only_model_serves_chat_completions_too(live, world, routes):
    """`always`: an o3-pro-like model that OpenAI serves on /v1/responses only."""
    fake = routes["openai"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})]),
                FakeReply(text="Streamed through responses."))
    client = sdk(live, world.red_key)
    chat_tool = {"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}
    completion = client.chat.completions.create(model="always", messages=[{"role": "user", "content": "Oslo?"}],
                                                tools=[chat_tool])
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {
        "city": "Oslo"}
    chunks = list(client.chat.completions.create(model="always", stream=True,
                                                 messages=[{"role": "user", "content": "again"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Streamed through responses."
    assert _upstream(fake) == ["/v1/responses", "/v1/responses"]
    # `stop` exists on Chat Completions only: that request stays there
    client.chat.completions.create(model="always", messages=[{"role": "user", "content": "x"}], stop=["END"])
    assert _upstream(fake)[-1] == "/v1/chat/completions"


def test_a_bad_responses_api_option_is_refused_in_the_provider_form(admin_client):
    response = admin_client.post("/dashboard/providers/new/", {
        "name": "bad", "kind": "openai", "base_url": "", "enabled": "on", "connect_timeout": 5,
        "read_timeout": 30, "options": '{"responses_api": "sometimes"}'})
    assert response.status_code == 400 and "responses_api must be one of native, always, off" in response.text
    assert not Provider.objects.filter(name="bad").exists()


# -- logprobs on /v1/responses ------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["native", "chat-only"])
def test_logprobs_come_back_on_output_text(live, world, routes, slug):
    fake = routes["openai"]
    fake.script(FakeReply(text="Oslo is sunny"))
    response = sdk(live, world.red_key).responses.create(model=slug, input="Weather?", include=[LOGPROBS],
                                                         top_logprobs=2)
    logprobs = response.output[0].content[0].logprobs
    assert [lp.token for lp in logprobs] == ["Oslo", "is", "sunny"]
    assert logprobs[0].logprob < 0 and logprobs[0].top_logprobs[0].token == "Oslo"
    sent = fake.requests[-1]["body"]
    if slug == "native":
        assert (sent["include"], sent["top_logprobs"]) == ([LOGPROBS], 2)
    else:
        assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)


def test_logprobs_are_refused_where_they_cannot_be_served(live, world, routes):
    client = sdk(live, world.red_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="anthropic", input="Weather?", include=[LOGPROBS])
    assert "logprobs" in caught.value.message and not routes["anthropic"].requests
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="native", input="Weather?", top_logprobs=1, stream=True)
    assert caught.value.body["code"] == "logprobs_not_supported_for_streams"
    assert not routes["openai"].requests
    assert Usage.objects.filter(http_status=400).count() == 2


# -- a Claude Agent route ----------------------------------------------------------------------


def test_a_claude_agent_route_answers_streams_and_keeps_the_conversation(live, world, routes):
    cli = routes["claude_agent"]
    cli.script(FakeReply(text="I remember: Ada."), FakeReply(text="Still Ada, streamed."))
    client = sdk(live, world.red_key)
    first = client.responses.create(model="claude", input="My name is Ada.", instructions="Be brief.")
    assert first.status == "completed" and first.output_text == "I remember: Ada."
    with client.responses.stream(model="claude", input="Who am I?", previous_response_id=first.id) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "Still Ada, streamed."
    assert "My name is Ada." in json.dumps(cli.requests[-1]["stdin"])  # the earlier turn reached the agent
    rows = list(Usage.objects.filter(persona="claude").order_by("created_at"))
    assert [(r.provider, r.status, r.stream) for r in rows] == [("claude", "ok", False), ("claude", "ok", True)]
