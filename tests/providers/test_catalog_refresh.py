"""The model catalog's refresh, through `manage.py catalog_refresh`: each
provider's list-models endpoint through its real SDK (wire-level fakes),
completed from the bundled genai-prices data; a kind without a list takes the
genai-prices models of its vendor; what is set is never overwritten."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import AuditEntry
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fakes():
    started = {"openai": FakeOpenAIServer().start(), "anthropic": FakeAnthropicServer().start(),
               "gemini": FakeGeminiServer().start()}
    yield started
    for fake in started.values():
        fake.stop()


def _provider(kind: str, fake, **fields) -> Provider:
    provider = Provider(name=kind, kind=kind, base_url=fake.base_url + ("/v1" if kind == "openai" else ""),
                        read_timeout=5, **fields)
    provider.set_credential(f"sk-test-{kind}")
    provider.save()
    return provider


def refresh(name: str | None = None) -> str:
    out = StringIO()
    call_command("catalog_refresh", *(["--provider", name] if name else []), stdout=out)
    return out.getvalue()


def catalog(provider: str) -> dict[str, Model]:
    return {m.name: m for m in Model.objects.filter(provider__name=provider)}


def test_each_providers_list_is_completed_from_genai_prices(fakes):
    for kind, fake in fakes.items():
        _provider(kind, fake)
    printed = refresh()
    assert "openai: 1 added, 0 completed, from provider" in printed
    mini = catalog("openai")["gpt-4o-mini"]  # the openai fake lists it; prices and window from genai-prices
    assert (mini.input_price, mini.output_price, mini.context_window, mini.source) == (
        Decimal("0.15"), Decimal("0.6"), 128_000, "provider")
    assert set(catalog("anthropic")) == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    gemini = catalog("gemini")
    assert (gemini["gemini-2.5-flash"].context_window, gemini["gemini-2.5-flash"].max_output_tokens) == (1048576, 65536)
    assert gemini["gemini-embedding-001"].supports_embeddings is True  # embedContent only
    assert gemini["gemini-2.5-flash"].supports_embeddings is False
    assert AuditEntry.objects.filter(action="provider.catalog_refresh").count() == 3


def test_a_refresh_never_overwrites_what_an_operator_set(fakes):
    provider = _provider("openai", fakes["openai"])
    Model.objects.create(provider=provider, name="gpt-4o-mini", input_price=Decimal("9"), source="custom")
    printed = refresh("openai")
    mini = catalog("openai")["gpt-4o-mini"]
    assert mini.input_price == Decimal("9") and mini.source == "custom"  # kept
    assert mini.output_price == Decimal("0.6") and mini.context_window == 128_000  # filled
    assert "0 added, 1 completed" in printed
    assert "0 added, 0 completed" in refresh("openai")  # again: nothing to do


def test_a_kind_without_a_list_takes_its_vendors_models_from_genai_prices(fakes):
    Provider.objects.create(name="claude-cli", kind="claude_agent", options={"cli_path": "/nonexistent"})
    printed = refresh("claude-cli")
    models = catalog("claude-cli")
    assert "from genai-prices" in printed and len(models) > 5
    assert all(m.source == "genai-prices" for m in models.values())
    assert any(name.startswith("claude-") and m.input_price for name, m in models.items())


def test_a_provider_whose_list_fails_falls_back_and_says_why(fakes):
    provider = _provider("openai", fakes["openai"])
    provider.base_url = "http://127.0.0.1:9/v1"  # nothing listens there: the list call fails
    provider.save()
    printed = refresh("openai")
    assert "from genai-prices (the provider's list failed" in printed
    assert "gpt-4o-mini" in catalog("openai")


def test_an_unknown_provider_is_a_clear_error():
    with pytest.raises(Exception, match="No provider named 'nope'"):
        refresh("nope")
