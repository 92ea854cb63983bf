"""The model catalog on the request path: limits refused before any call, with
the numbers, and capability-aware routing (a step whose model cannot serve a
feature the request needs is skipped, with the reason in the attempt log; no
step able: one clear 400). The official openai SDK against the live gateway,
providers through their wire-level fakes."""

from __future__ import annotations

import json

import openai
import pytest

from budgets.models import Usage
from budgets.selectors import provider_stats
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply, FakeToolCall
from tests.fakes.openai_server import FakeOpenAIServer

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
IMAGE = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def fakes():
    started = {"openai": FakeOpenAIServer().start(), "anthropic": FakeAnthropicServer().start()}
    yield started
    for fake in started.values():
        fake.stop()


def _provider(kind: str, fake) -> Provider:
    provider = Provider(name=kind, kind=kind, base_url=fake.base_url + ("/v1" if kind == "openai" else ""),
                        read_timeout=5)
    provider.set_credential(f"sk-test-{kind}")
    provider.save()
    return provider


@pytest.fixture
def catalog(fakes, world):
    """`small-first`: a small OpenAI model (no tools, no images, 100-token window,
    50 output tokens) falling back to a roomy Anthropic one; `small-only`: the small one alone."""
    for fake in fakes.values():
        fake.reset()
    openai_provider, anthropic_provider = _provider("openai", fakes["openai"]), _provider("anthropic", fakes["anthropic"])
    small = Model.objects.create(provider=openai_provider, name="gpt-small", input_price=1, output_price=2,
                                 context_window=100, max_output_tokens=50, supports_tools=False,
                                 supports_images=False)
    Model.objects.create(provider=anthropic_provider, name=fakes["anthropic"].model, input_price=1, output_price=2,
                         context_window=200_000, max_output_tokens=8192, supports_tools=True)
    first = Persona.objects.create(slug="small-first")
    RouteStep.objects.create(persona=first, position=0, provider=openai_provider, model=small.name)
    RouteStep.objects.create(persona=first, position=1, provider=anthropic_provider, model=fakes["anthropic"].model)
    only = Persona.objects.create(slug="small-only")
    RouteStep.objects.create(persona=only, provider=openai_provider, model=small.name)
    return fakes


def sdk(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def ask(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


# -- capability-aware routing ----------------------------------------------------------------


def test_a_step_whose_model_has_no_tools_is_skipped_with_its_reason(live, world, catalog):
    catalog["anthropic"].script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})]))
    answer = sdk(live, world.red_key).chat.completions.create(model="small-first", messages=ask("Oslo?"),
                                                              tools=[WEATHER])
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert catalog["openai"].call_count == 0 and catalog["anthropic"].call_count == 1
    row = Usage.objects.get()
    skipped, answered = row.attempt_log
    assert (skipped["provider"], skipped["outcome"]) == ("openai", "skipped")
    assert "gpt-small does not serve tool calls" in skipped["error"]
    assert (answered["provider"], answered["outcome"]) == ("anthropic", "ok")
    # a skip is not a failure of the provider's health
    health = provider_stats(since=row.created_at.replace(year=2000))
    assert "openai" not in health or health["openai"].failures == 0


def test_without_the_feature_the_first_step_serves(live, world, catalog):
    sdk(live, world.red_key).chat.completions.create(model="small-first", messages=ask())
    assert catalog["openai"].call_count == 1 and catalog["anthropic"].call_count == 0
    assert [a["outcome"] for a in Usage.objects.get().attempt_log] == ["ok"]


def test_images_to_a_route_where_no_step_sees_them_are_one_clear_400(live, world, catalog):
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).chat.completions.create(model="small-only",
                                                         messages=[{"role": "user", "content": content}])
    error = caught.value.body
    assert (error["code"], error["param"]) == ("images_not_supported", "messages")
    assert "openai/gpt-small" in error["message"] and "image inputs" in error["message"]
    assert catalog["openai"].call_count == 0
    assert Usage.objects.get().http_status == 400


def test_a_streamed_request_skips_too(live, world, catalog):
    catalog["anthropic"].script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"})]))
    chunks = list(sdk(live, world.red_key).chat.completions.create(model="small-first", messages=ask("Rome?"),
                                                                   tools=[WEATHER], stream=True))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert [a["outcome"] for a in Usage.objects.get().attempt_log] == ["skipped", "ok"]


# -- limits from the catalog ---------------------------------------------------------------------


def test_max_tokens_over_the_models_output_limit_is_refused_with_the_numbers(live, world, catalog):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).chat.completions.create(model="small-only", messages=ask(), max_tokens=1_000_000_000)
    error = caught.value.body
    assert (error["code"], error["param"]) == ("max_tokens_too_large", "max_tokens")
    assert "max_tokens is 1000000000" in error["message"] and "at most 50 tokens" in error["message"]
    assert catalog["openai"].call_count == 0


def test_a_prompt_over_the_context_window_is_refused_with_the_numbers(live, world, catalog):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).chat.completions.create(model="small-only", messages=ask("word " * 200))
    error = caught.value.body
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "about 250 tokens" in error["message"] and "at most 100" in error["message"]
    assert catalog["openai"].call_count == 0


def test_a_prompt_too_long_for_the_first_step_goes_to_the_roomy_one(live, world, catalog):
    sdk(live, world.red_key).chat.completions.create(model="small-first", messages=ask("word " * 200))
    assert catalog["openai"].call_count == 0 and catalog["anthropic"].call_count == 1
    assert "takes at most 100" in Usage.objects.get().attempt_log[0]["error"]


def test_within_the_limits_the_request_is_sent_as_asked(live, world, catalog):
    sdk(live, world.red_key).chat.completions.create(model="small-only", messages=ask("short"), max_tokens=40)
    sent = catalog["openai"].requests[-1]["body"]
    assert sent.get("max_tokens") == 40


# -- the demo honours response_format ---------------------------------------------------------------


def test_the_demo_answers_valid_json_for_a_schema(live, world):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                               "mood": {"enum": ["sunny", "rainy"]},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["city", "days", "mood", "tags"], "additionalProperties": False}
    answer = sdk(live, world.red_key).chat.completions.create(
        model="architect", messages=ask("Plan a trip"),
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}})
    value = json.loads(answer.choices[0].message.content)
    assert value == {"city": "demo", "days": 1, "mood": "sunny", "tags": ["demo"]}
    plain = sdk(live, world.red_key).chat.completions.create(model="architect", messages=ask("Plan"),
                                                             response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content)["answer"].startswith("[demo]")
