"""Azure OpenAI specifics: deployments in the path, api-version, API key or Entra token.

The shared behaviour (chat, stream, tools, images, usage, errors, cancellation)
is in test_adapter_conformance.py; the body is OpenAI's, checked in
test_openai_adapter.py. Here: what Azure adds on the wire.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from providers.adapters.azure_openai import AzureOpenAIAdapter
from providers.types import ChatRequest, EmbeddingRequest, Message, ProviderError
from tests.fakes.azure_openai_server import API_VERSION, FakeAzureOpenAIServer
from tests.fakes.common import FakeReply

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def fake():
    server = FakeAzureOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield
    fake.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def make(fake):
    made = []

    def build(**overrides) -> AzureOpenAIAdapter:
        made.append(AzureOpenAIAdapter(fake.adapter_config(**overrides)))
        return made[-1]

    yield build
    for adapter in made:
        await adapter.aclose()


def ask(model: str = "gpt-4o-mini-prod") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content="Say hello.")])


async def test_the_model_is_the_deployment_in_the_path_with_the_api_version(fake, make):
    fake.script(FakeReply(text="Hello from Azure."))
    result = await make().chat(ask("team-gpt4o"))
    assert result.content == "Hello from Azure."
    request = fake.requests[-1]
    assert request["path"] == "/openai/deployments/team-gpt4o/chat/completions"
    assert fake.deployment_of() == "team-gpt4o"
    assert request["body"]["messages"] == [{"role": "user", "content": "Say hello."}]


async def test_an_api_key_travels_in_the_api_key_header_not_as_a_bearer(fake, make):
    await make(credential="azure-key-abc").chat(ask())
    headers = fake.requests[-1]["headers"]
    assert headers["api-key"] == "azure-key-abc"
    assert "authorization" not in headers


async def test_an_entra_token_travels_as_a_bearer_and_no_api_key(fake, make):
    adapter = make(credential="eyJ0eXAi.entra.token", options={"api_version": API_VERSION,
                                                              "credential_type": "entra_token"})
    await adapter.chat(ask())
    headers = fake.requests[-1]["headers"]
    assert headers["authorization"] == "Bearer eyJ0eXAi.entra.token"
    assert "api-key" not in headers


async def test_another_api_version_is_what_the_resource_receives(fake, make):
    with pytest.raises(ProviderError) as caught:  # the fake serves only API_VERSION, as a resource serves its own
        await make(options={"api_version": "2023-05-15"}).chat(ask())
    assert caught.value.kind == "bad_request" and caught.value.status == 404


async def test_a_stream_goes_to_the_deployment_too(fake, make):
    fake.script(FakeReply(text="streamed"))
    texts = [e.text async for e in make().stream(ask("team-gpt4o")) if e.type == "delta"]
    assert "".join(texts) == "streamed"
    assert fake.deployment_of() == "team-gpt4o" and fake.requests[-1]["body"]["stream"] is True


async def test_embeddings_go_to_the_embedding_deployment(fake, make):
    result = await make().embed(EmbeddingRequest(model="embed-small", inputs=["one", "two"]))
    assert len(result.vectors) == 2 and result.usage.input_tokens == 2
    assert fake.requests[-1]["path"] == "/openai/deployments/embed-small/embeddings"


async def test_the_processes_azure_env_is_never_read(fake, make, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-key-must-not-be-sent")
    monkeypatch.setenv("OPENAI_API_VERSION", "1999-01-01")
    await make(credential="the-configured-key").chat(ask())
    request = fake.requests[-1]
    assert request["headers"]["api-key"] == "the-configured-key"
    assert "env-key-must-not-be-sent" not in str(request["headers"])
