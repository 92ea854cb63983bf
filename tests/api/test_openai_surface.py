"""The rest of the OpenAI surface modern clients call, through the real SDKs
against the live server and the wire-level fakes: /v1/embeddings,
/v1/completions, /v1/models/{id}, logprobs, strict tools, n, content parts the
gateway cannot carry; and the model list in Anthropic's shape for the anthropic SDK."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest
from django.contrib.auth import get_user_model

from budgets.models import Budget, Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

EMBEDDING_MODEL = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}


@pytest.fixture(scope="module")
def fakes():
    started = {"openai": FakeOpenAIServer().start(), "gemini": FakeGeminiServer().start(),
               "anthropic": FakeAnthropicServer().start()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def routed(fakes, world):
    """Personas `embed-openai`, `embed-gemini` (embedding models), `chat-openai`,
    `chat-anthropic`, `chat-gemini`, each routed to its fake, with prices set."""
    providers = {}
    for kind, fake in fakes.items():
        fake.reset()
        provider = Provider(name=kind, kind=kind, base_url=fake.base_url + ("/v1" if kind == "openai" else ""),
                            read_timeout=5)
        provider.set_credential(f"test-key-{kind}")
        provider.save()
        providers[kind] = provider
        Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    for kind, model in EMBEDDING_MODEL.items():
        Model.objects.create(provider=providers[kind], name=model, input_price=Decimal("0.02"), output_price=0)
        persona = Persona.objects.create(slug=f"embed-{kind}")
        RouteStep.objects.create(persona=persona, provider=providers[kind], model=model)
    for kind in ("openai", "anthropic", "gemini"):
        persona = Persona.objects.create(slug=f"chat-{kind}")
        RouteStep.objects.create(persona=persona, provider=providers[kind], model=fakes[kind].model)
    return fakes


def sdk(live, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def rows(endpoint: str) -> list[Usage]:
    return list(Usage.objects.filter(endpoint=endpoint).order_by("id"))


# -- /v1/embeddings ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_embeddings_come_back_one_vector_per_input_and_leave_one_priced_row(live, world, routed, kind):
    result = sdk(live, world.red_key).embeddings.create(model=f"embed-{kind}", input=["red apple", "green pear"],
                                                        encoding_format="float")
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 16 and result.data[0].embedding != result.data[1].embedding
    assert result.model == EMBEDDING_MODEL[kind] and result.usage.prompt_tokens > 0
    [row] = rows("v1.embeddings")
    assert (row.provider, row.model, row.status, row.http_status) == (kind, EMBEDDING_MODEL[kind], "ok", 200)
    assert row.input_tokens == result.usage.prompt_tokens and row.output_tokens == 0
    assert row.cost_usd == (Decimal("0.02") * row.input_tokens / 1_000_000).quantize(Decimal("0.00000001"))
    sent = routed[kind].requests[-1]
    assert "embed" in sent["path"].lower()


def test_embeddings_keep_the_same_vector_for_the_same_text_and_honour_dimensions(live, world, routed):
    client = sdk(live, world.red_key)
    first = client.embeddings.create(model="embed-openai", input="same text", dimensions=8).data[0].embedding
    again = client.embeddings.create(model="embed-openai", input="same text", dimensions=8).data[0].embedding
    assert first == again and len(first) == 8
    assert routed["openai"].requests[-1]["body"]["dimensions"] == 8


def test_base64_embeddings_decode_to_the_float_vectors(live, world, routed):
    client = sdk(live, world.red_key)
    floats = client.embeddings.create(model="embed-openai", input="pack me", encoding_format="float")
    raw = httpx.post(f"{live.url}/v1/embeddings", headers={"Authorization": f"Bearer {world.red_key}"},
                     json={"model": "embed-openai", "input": "pack me", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    # The SDK's own default asks for base64 and decodes it.
    assert sdk(live, world.red_key).embeddings.create(model="embed-openai", input="pack me").data[0].embedding \
        == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_the_demo_provider_embeds_offline_and_deterministically(live, world):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.direct_key, max_retries=0)
    one = client.embeddings.create(model="demo/demo", input="offline", encoding_format="float").data[0].embedding
    two = client.embeddings.create(model="demo/demo", input="offline", encoding_format="float").data[0].embedding
    assert one == two and len(one) == 256 and abs(sum(x * x for x in one) - 1) < 1e-3


def test_a_route_without_embeddings_is_refused_before_any_provider_call(live, world, routed):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(live, world.red_key).embeddings.create(model="chat-anthropic", input="hello")
    error = refused.value.body
    assert error["code"] == "embeddings_not_supported" and "anthropic" in error["message"]
    assert routed["anthropic"].call_count == 0
    [row] = rows("v1.embeddings")
    assert (row.status, row.http_status, row.error_code) == ("refused", 400, "embeddings_not_supported")


def test_token_arrays_reach_a_provider_that_shares_openais_tokenizer(live, world, routed):
    client = sdk(live, world.red_key)
    many = client.embeddings.create(model="embed-openai", input=[[9906, 1917], [15339, 11, 1917]])
    one = client.embeddings.create(model="embed-openai", input=[9906, 1917])
    assert len(many.data) == 2 and len(one.data) == 1
    assert one.data[0].embedding == many.data[0].embedding  # the same tokens, the same vector
    sent = [r["body"]["input"] for r in routed["openai"].requests]
    assert sent == [[[9906, 1917], [15339, 11, 1917]], [[9906, 1917]]]
    assert [r.input_tokens for r in rows("v1.embeddings")] == [5, 2]


def test_token_arrays_are_refused_on_a_route_whose_provider_has_another_tokenizer(live, world, routed):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).embeddings.create(model="embed-gemini", input=[[9906, 1917]])
    error = caught.value.body
    assert (error["code"], error["param"]) == ("token_inputs_not_supported", "input")
    assert "token-array inputs" in error["message"] and routed["gemini"].call_count == 0
    assert rows("v1.embeddings")[0].http_status == 400


@pytest.mark.parametrize("body, code", [
    ({"input": [[1, "a"]]}, "invalid_request"),
    ({"input": [[]]}, "invalid_request"),
    ({"input": [1, -2]}, "invalid_request"),
    ({"input": []}, "invalid_request"),
    ({"input": ["ok", ""]}, "invalid_request"),
])
def test_embedding_inputs_the_gateway_cannot_use_are_refused_by_name(live, world, routed, body, code):
    response = httpx.post(f"{live.url}/v1/embeddings", headers={"Authorization": f"Bearer {world.red_key}"},
                          json={"model": "embed-openai", **body})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code and response.json()["error"]["param"] == "input"
    assert routed["openai"].call_count == 0
    assert len(rows("v1.embeddings")) == 1


def test_embeddings_are_reserved_against_a_hard_budget(live, world, routed):
    Budget.objects.create(name="tiny", scope="team", team=world.red, period="month", limit_usd=Decimal("0.00000001"))
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(live, world.red_key).embeddings.create(model="embed-openai", input="x" * 3000)
    assert refused.value.body["code"] == "budget_exceeded"
    assert routed["openai"].call_count == 0


def test_embedding_costs_appear_on_the_costs_dashboard(live, world, routed, client):
    model = Model.objects.get(name="text-embedding-3-small")
    model.input_price = Decimal("1000")  # per million tokens: a cost the page shows at 4 places
    model.save()
    sdk(live, world.red_key).embeddings.create(model="embed-openai", input="dashboard me please")
    [row] = rows("v1.embeddings")
    assert row.cost_usd >= Decimal("0.001")
    staff = get_user_model().objects.create_user("lead", password="pw-lead-1", is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get("/dashboard/costs/").content.decode()
    assert "text-embedding-3-small" in page and f"${row.cost_usd:.4f}" in page
    assert "text-embedding-3-small" in client.get("/dashboard/usage/").content.decode()


# -- /v1/completions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_legacy_completions_answer_a_prompt_through_the_persona(live, world, routed, kind):
    routed[kind].script(FakeReply(text="Paris is the capital."))
    result = sdk(live, world.red_key).completions.create(model=f"chat-{kind}", prompt="The capital of France is",
                                                         max_tokens=20)
    assert result.object == "text_completion" and result.choices[0].text == "Paris is the capital."
    assert result.choices[0].finish_reason == "stop" and result.usage.total_tokens == 20
    assert "The capital of France is" in str(routed[kind].requests[-1]["body"])
    [row] = rows("v1.completions")
    assert (row.status, row.persona, row.provider) == ("ok", f"chat-{kind}", kind)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_legacy_completions_stream_text_chunks_ending_in_done(live, world, routed, kind):
    routed[kind].script(FakeReply(text="One two three four.", chunk_size=4))
    chunks = list(sdk(live, world.red_key).completions.create(
        model=f"chat-{kind}", prompt="Count", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "One two three four."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    [row] = rows("v1.completions")
    assert row.stream and row.status == "ok"


@pytest.mark.parametrize("extra, code", [({"n": 2}, "n_not_supported"), ({"echo": True}, "echo_not_supported"),
                                         ({"prompt": ["a", "b"]}, "multiple_prompts_not_supported")])
def test_legacy_completion_options_a_chat_model_cannot_honour_are_refused(live, world, routed, extra, code):
    response = httpx.post(f"{live.url}/v1/completions", headers={"Authorization": f"Bearer {world.red_key}"},
                          json={"model": "chat-openai", "prompt": "hi", **extra})
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert routed["openai"].call_count == 0


# -- chat: logprobs, strict, n, content parts -------------------------------------------------------


def test_logprobs_are_passed_through_where_the_provider_has_them(live, world, routed):
    routed["openai"].script(FakeReply(text="Hello there friend"))
    result = sdk(live, world.red_key).chat.completions.create(
        model="chat-openai", messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=1)
    tokens = [entry.token for entry in result.choices[0].logprobs.content]
    assert tokens == ["Hello", "there", "friend"]
    assert routed["openai"].requests[-1]["body"]["logprobs"] is True
    assert routed["openai"].requests[-1]["body"]["top_logprobs"] == 1


def test_logprobs_are_refused_clearly_where_the_provider_has_none(live, world, routed):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(live, world.red_key).chat.completions.create(
            model="chat-anthropic", messages=[{"role": "user", "content": "hi"}], logprobs=True)
    assert refused.value.body["code"] == "logprobs_not_supported"
    assert routed["anthropic"].call_count == 0


def test_strict_function_tools_reach_the_provider(live, world, routed):
    tool = {"type": "function", "function": {"name": "lookup", "strict": True, "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": False}}}
    sdk(live, world.red_key).chat.completions.create(
        model="chat-openai", messages=[{"role": "user", "content": "find it"}], tools=[tool])
    sent = routed["openai"].requests[-1]["body"]["tools"][0]["function"]
    assert sent["strict"] is True and sent["name"] == "lookup"


def test_n_above_one_is_refused_with_the_reason(live, world, routed):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(live, world.red_key).chat.completions.create(
            model="chat-openai", messages=[{"role": "user", "content": "hi"}], n=3)
    assert refused.value.body["code"] == "n_not_supported" and "one choice per request" in refused.value.body["message"]


def test_a_content_part_the_gateway_cannot_carry_is_named_in_the_error(live, world, routed):
    body = {"model": "chat-openai", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "read this"}, {"type": "file", "file": {"file_id": "file-1"}}]}]}
    response = httpx.post(f"{live.url}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {world.red_key}"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "unsupported_content_type"
    assert "'file'" in error["message"] and ".str" not in error["message"]


def test_a_broken_part_is_reported_at_its_own_field_not_the_string_branch(live, world, routed):
    body = {"model": "chat-openai", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    response = httpx.post(f"{live.url}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {world.red_key}"})
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"] == "messages.0.content.0.image_url.url", error
    assert "Field required" in error["message"]


# -- models ----------------------------------------------------------------------------------------


def test_models_retrieve_finds_a_persona_and_refuses_an_unknown_one(live, world, routed):
    client = sdk(live, world.red_key)
    model = client.models.retrieve("architect")
    assert (model.id, model.object, model.owned_by) == ("architect", "model", "persona")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nobody")
    assert missing.value.body["code"] == "model_not_found"


def test_a_direct_key_can_retrieve_a_provider_model_with_a_slash_in_its_id(live, world, routed):
    client = sdk(live, world.direct_key)
    model = client.models.retrieve("openai/text-embedding-3-small")
    assert (model.id, model.owned_by) == ("openai/text-embedding-3-small", "openai")
    with pytest.raises(openai.NotFoundError):
        sdk(live, world.red_key).models.retrieve("openai/text-embedding-3-small")  # no direct scope


def test_the_anthropic_sdk_lists_and_retrieves_models_in_anthropics_shape(live, world, routed):
    client = anthropic.Anthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "architect" in ids and all(m.type == "model" for m in page.data)
    assert client.models.retrieve("architect").display_name
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("nobody")
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"


def test_unknown_paths_under_messages_answer_in_anthropics_envelope(live, world):
    response = httpx.post(f"{live.url}/v1/messages/nope", headers={"x-api-key": world.red_key},
                          json={"model": "architect"})
    body = response.json()
    assert response.status_code == 404 and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
