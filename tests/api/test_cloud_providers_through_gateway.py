"""The cloud providers (Azure OpenAI, AWS Bedrock, Vertex AI's Gemini and Claude)
behind personas, through the live gateway's OpenAI endpoint and the real SDKs,
against their wire-level fakes: a fallback chain Azure -> Bedrock -> Vertex that
serves a streamed tool call, each kind's own tool conversation, and canary
credentials that never leak and are stored encrypted."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.azure_openai_server import API_VERSION, FakeAzureOpenAIServer
from tests.fakes.bedrock_server import ACCESS_KEY_ID, REGION, FakeBedrockServer
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.vertex_server import PROJECT, FakeVertexAnthropicServer, FakeVertexGeminiServer

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]
CANARY = {
    "azure": "azure-canary-key-0123456789abcdef",
    "bedrock": "bedrock/canary+secret0123456789abcdefghij",
    "vertex": "ya29.vertex-canary-token-0123456789",
    "vertex-claude": "ya29.vertex-claude-canary-0123456789",
}


@pytest.fixture(scope="module")
def fakes():
    started = {"azure": FakeAzureOpenAIServer().start(), "bedrock": FakeBedrockServer().start(),
               "vertex": FakeVertexGeminiServer().start(), "vertex-claude": FakeVertexAnthropicServer().start()}
    yield started
    for fake in started.values():
        fake.stop()


def _provider(name: str, fake, credential: str) -> Provider:
    """The provider as an operator would configure it (kind, endpoint, options), pointed at the fake."""
    if name == "azure":
        kind, base_url, options = "azure_openai", fake.base_url, {"api_version": API_VERSION}
    elif name == "bedrock":
        kind, base_url, options = "bedrock", fake.base_url, {"region": REGION}
    else:
        kind = "vertex_gemini" if name == "vertex" else "vertex_anthropic"
        base_url, options = fake.vertex_base_url, {"project": PROJECT, "region": fake.location}
    provider = Provider(name=name, kind=kind, base_url=base_url, read_timeout=5, options=options)
    provider.set_credential(credential)
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    return provider


def _credential(name: str, fake, secret: str) -> str:
    if name == "bedrock":  # AWS keys are a JSON object; the canary is in both secret halves
        return json.dumps({"access_key_id": ACCESS_KEY_ID, "secret_access_key": secret,
                           "session_token": f"FwoGZXIvYXdzE{secret}"})
    if name.startswith("vertex"):
        fake.oauth.issued.add(secret)  # the fake accepts this access token
    return secret


@pytest.fixture
def routed(fakes, world):
    """`via-<name>` for each cloud provider, and `cloud-chain`: Azure, then Bedrock, then Vertex (Gemini)."""
    providers = {}
    for name, fake in fakes.items():
        fake.reset()
        providers[name] = _provider(name, fake, _credential(name, fake, CANARY[name]))
        persona = Persona.objects.create(slug=f"via-{name}")
        RouteStep.objects.create(persona=persona, provider=providers[name], model=fake.model)
    chain = Persona.objects.create(slug="cloud-chain")
    for position, name in enumerate(("azure", "bedrock", "vertex")):
        RouteStep.objects.create(persona=chain, position=position, provider=providers[name], model=fakes[name].model,
                                 params={"max_attempts": 1})
    return fakes


def sdk(live, key):
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def streamed_calls(stream) -> tuple[dict[str, dict], str | None]:
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta_call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta_call.id or ""
            entry["name"] += delta_call.function.name or ""
            entry["arguments"] += delta_call.function.arguments or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return {c["name"]: json.loads(c["arguments"]) | {"_id": c["id"]} for c in calls.values()}, finish


def test_azure_falls_back_to_bedrock_then_vertex_which_streams_the_tool_call(live, world, routed):
    routed["azure"].script(Fault("status", status=503, message="The service is temporarily overloaded."))
    routed["bedrock"].script(Fault("status", status=429, message="Too many requests, please wait."))
    routed["vertex"].script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Lima"}),
                                                           FakeToolCall("get_time", {"tz": "PET"})]))
    response = sdk(live, world.red_key).chat.completions.with_raw_response.create(
        model="cloud-chain", messages=[{"role": "user", "content": "Weather and time in Lima?"}], tools=TOOLS,
        stream=True, stream_options={"include_usage": True})
    assert response.headers["x-ep-provider"] == "vertex"
    calls, finish = streamed_calls(response.parse())
    assert finish == "tool_calls"
    assert {name: {k: v for k, v in args.items() if k != "_id"} for name, args in calls.items()} == {
        "get_weather": {"city": "Lima"}, "get_time": {"tz": "PET"}}
    assert all(args["_id"] for args in calls.values())
    # Each step was really called, through its own SDK and protocol:
    assert routed["azure"].deployment_of() == routed["azure"].model
    assert routed["bedrock"].requests[-1]["path"].endswith("/converse-stream")
    assert routed["bedrock"].signers[-1]["key"] == ACCESS_KEY_ID
    assert ":streamGenerateContent" in routed["vertex"].requests[-1]["path"]
    row = Usage.objects.get(persona="cloud-chain")
    assert (row.provider, row.status, row.attempts) == ("vertex", "ok", 3)
    assert [(a["provider"], a["outcome"]) for a in row.attempt_log] == [
        ("azure", "unavailable"), ("bedrock", "rate_limited"), ("vertex", "ok")]
    assert row.cost_usd > 0


@pytest.mark.parametrize("name", sorted(CANARY))
def test_each_cloud_provider_holds_a_tool_conversation(live, world, routed, name):
    fake = routed[name]
    fake.script(
        FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}),
                                       FakeToolCall("get_time", {"tz": "CET"})]),
        FakeReply(text="Oslo is sunny at noon."),
    )
    client = sdk(live, world.red_key)
    messages = [{"role": "user", "content": "Weather and time in Oslo?"}]
    first = client.chat.completions.create(model=f"via-{name}", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert {c.function.name: json.loads(c.function.arguments) for c in choice.message.tool_calls} == {
        "get_weather": {"city": "Oslo"}, "get_time": {"tz": "CET"}}
    messages.append(choice.message.model_dump(exclude_none=True))
    for call in choice.message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result of {call.function.name}"})
    final = client.chat.completions.create(model=f"via-{name}", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "Oslo is sunny at noon."
    assert "result of get_time" in json.dumps(fake.requests[-1]["body"])  # both results, in the provider's shape
    rows = list(Usage.objects.filter(persona=f"via-{name}"))
    assert len(rows) == 2 and {r.provider for r in rows} == {name} and all(r.cost_usd > 0 for r in rows)


@pytest.mark.parametrize("name", sorted(CANARY))
def test_the_cloud_credential_is_stored_encrypted_and_never_leaks(live, world, routed, name):
    fake = routed[name]
    bodies = []
    for fault in (Fault("status", status=403, message="denied"), Fault("status", status=500, message="boom"),
                  Fault("malformed"), Fault("cut", after_chunks=1, reply=FakeReply(text="this will be cut"))):
        fake.script(fault)
        response = httpx.post(live.url + "/v1/chat/completions", timeout=10, headers={
            "Authorization": f"Bearer {world.red_key}"}, json={
            "model": f"via-{name}", "messages": [{"role": "user", "content": "hi"}], "stream": fault.kind == "cut"})
        bodies.append(response.text + json.dumps(dict(response.headers)))
    for path in ("/health", "/capabilities", "/v1/models"):
        bodies.append(httpx.get(live.url + path, headers={"Authorization": f"Bearer {world.red_key}"}).text)
    secret = CANARY[name]
    assert fake.requests, "the fake was called"
    assert not any(secret in body for body in bodies)
    assert secret not in live.log_text()
    ledger = " ".join(f"{r.error_code} {r.error_message}" for r in Usage.objects.all())
    assert secret not in ledger and "provider_" in ledger
    stored = Provider.objects.get(name=name)
    assert secret not in stored.credential_encrypted and secret in stored.get_credential()
