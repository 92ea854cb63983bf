"""Vertex AI specifics, Gemini and Claude: the resource path, Google OAuth (an
access token, or a service-account key whose token the real google-auth mints at
the fake's token endpoint), and credentials that cannot work.

The shared behaviour (chat, stream, tools, images, usage, errors, cancellation)
is in test_adapter_conformance.py.
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from providers.adapters.cloud_credentials import aws_keys, google_service_account_info
from providers.adapters.vertex_anthropic import VertexAnthropicAdapter
from providers.adapters.vertex_gemini import VertexGeminiAdapter
from providers.types import ChatRequest, Message, ProviderError
from tests.fakes.common import FakeReply
from tests.fakes.vertex_server import (
    ACCESS_TOKEN,
    PROJECT,
    FakeVertexAnthropicServer,
    FakeVertexGeminiServer,
    service_account_json,
)

ADAPTERS = {"gemini": VertexGeminiAdapter, "claude": VertexAnthropicAdapter}


@pytest.fixture(scope="module")
def servers():
    started = {"gemini": FakeVertexGeminiServer().start(), "claude": FakeVertexAnthropicServer().start()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=sorted(ADAPTERS))
def fake(request, servers):
    server = servers[request.param]
    server.reset()
    server.oauth.assertions.clear()
    server.oauth.deny = False
    server.publisher = request.param
    yield server
    server.oauth.deny = False
    server.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def make(fake):
    made = []

    def build(**overrides):
        made.append(ADAPTERS[fake.publisher](fake.adapter_config(**overrides)))
        return made[-1]

    yield build
    for adapter in made:
        await adapter.aclose()


def ask(fake) -> ChatRequest:
    return ChatRequest(model=fake.model, messages=[Message("user", "Say hello.")])


def resource(fake, method: str) -> str:
    publisher = "google" if fake.publisher == "gemini" else "anthropic"
    version = "v1beta1" if fake.publisher == "gemini" else "v1"
    return (f"/{version}/projects/{PROJECT}/locations/{fake.location}/publishers/{publisher}/models/"
            f"{fake.model}:{method}")


@pytest.mark.asyncio
async def test_calls_go_to_the_projects_model_with_the_access_token(fake, make):
    fake.script(FakeReply(text="Hello from Vertex."), FakeReply(text="streamed"))
    adapter = make()
    assert (await adapter.chat(ask(fake))).content == "Hello from Vertex."
    texts = [e.text async for e in adapter.stream(ask(fake)) if e.type == "delta"]
    assert "".join(texts) == "streamed"
    stream_method = "streamGenerateContent" if fake.publisher == "gemini" else "streamRawPredict"
    chat_method = "generateContent" if fake.publisher == "gemini" else "rawPredict"
    assert [r["path"].split("?")[0] for r in fake.requests] == [resource(fake, chat_method),
                                                                resource(fake, stream_method)]
    for request in fake.requests:
        assert request["headers"]["authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert "x-goog-api-key" not in request["headers"] and "x-api-key" not in request["headers"]


@pytest.mark.asyncio
async def test_claude_on_vertex_gets_the_model_in_the_path_not_the_body(servers):
    claude = servers["claude"]
    claude.reset()
    adapter = VertexAnthropicAdapter(claude.adapter_config())
    try:
        await adapter.chat(ChatRequest(model=claude.model, messages=[Message("user", "hi")], max_tokens=20))
    finally:
        await adapter.aclose()
    body = claude.requests[-1]["body"]
    assert "model" not in body and body["anthropic_version"] and body["max_tokens"] == 20
    assert claude.requests[-1]["path"].endswith(f"/models/{claude.model}:rawPredict")


@pytest.mark.asyncio
async def test_a_service_account_key_mints_its_token_at_its_token_uri(fake, make):
    key_file = service_account_json(fake.base_url + "/token")
    fake.script(FakeReply(text="signed in"))
    result = await make(credential=key_file).chat(ask(fake))
    assert result.content == "signed in"
    claims = fake.oauth.assertions[-1]
    assert claims["iss"] == "gateway@ep-test-project.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    sent = fake.requests[-1]["headers"]["authorization"]
    assert sent.startswith("Bearer ya29.fake-issued-") and sent[7:] in fake.oauth.issued
    assert json.loads(key_file)["private_key"] not in json.dumps(fake.requests)


@pytest.mark.asyncio
async def test_a_service_account_google_refuses_is_auth_in_chat_and_stream(fake, make):
    fake.oauth.deny = True
    adapter = make(credential=service_account_json(fake.base_url + "/token"))
    with pytest.raises(ProviderError) as caught:
        await adapter.chat(ask(fake))
    assert caught.value.kind == "auth" and "invalid_grant" in caught.value.message
    events = [e async for e in adapter.stream(ask(fake))]
    assert [e.type for e in events] == ["error"] and events[0].error.kind == "auth"
    assert fake.call_count == 0  # no model call without a token


@pytest.mark.asyncio
async def test_a_token_the_fake_does_not_know_is_auth(fake, make):
    with pytest.raises(ProviderError) as caught:
        await make(credential="ya29.expired-or-revoked").chat(ask(fake))
    assert caught.value.kind == "auth" and caught.value.status == 401


@pytest.mark.asyncio
@pytest.mark.parametrize("credential, options, words", [
    ('{"type": "authorized_user", "refresh_token": "x"}', None, "service-account"),
    ('{"type": "service_account", "client_email": "a@b"}', None, "lacks private_key, token_uri"),
    ("ya29.token", {"region": "us-east5"}, "project"),
])
async def test_a_credential_or_setting_that_cannot_work_fails_as_auth_without_calling(fake, make, credential,
                                                                                   options, words):
    overrides = {"credential": credential} | ({"options": options} if options is not None else {})
    adapter = make(**overrides)
    with pytest.raises(ProviderError) as caught:
        await adapter.chat(ask(fake))
    assert caught.value.kind == "auth" and words in caught.value.message
    events = [e async for e in adapter.stream(ask(fake))]
    assert [e.type for e in events] == ["error"] and events[0].error.kind == "auth"
    assert fake.call_count == 0


# -- the credential texts, pure ------------------------------------------------------


def test_aws_keys_take_the_cli_spellings_and_need_both_halves():
    keys = aws_keys('{"aws_access_key_id": "AKIA1", "aws_secret_access_key": "s3cr3t", "aws_session_token": "t0k3n"}')
    assert (keys.access_key_id, keys.secret_access_key, keys.session_token) == ("AKIA1", "s3cr3t", "t0k3n")
    assert "s3cr3t" not in repr(keys) and "t0k3n" not in repr(keys)
    for text in ('{"access_key_id": "AKIA1"}', "AKIA1:secret", "[1, 2]", "{broken"):
        with pytest.raises(ValueError):
            aws_keys(text)


def test_a_google_credential_is_a_service_account_file_or_one_token():
    assert google_service_account_info("ya29.a0-token") is None
    info = google_service_account_info(service_account_json("https://oauth2.googleapis.com/token"))
    assert info["client_email"].endswith(".iam.gserviceaccount.com")
    with pytest.raises(ValueError):
        google_service_account_info("two words")
