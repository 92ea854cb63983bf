"""Provider prompt caching through the live gateway: every adapter reads its
provider's cached input tokens from usage and the row bills them at the cached
rate with what that saved; Anthropic `cache_control` breakpoints pass through
/v1/messages (the anthropic SDK) and a persona can set one on its system prompt
for chat completions (the openai SDK)."""

from __future__ import annotations

import re
from decimal import Decimal

import anthropic
import openai
import pytest

from budgets.models import Budget, Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.claude_cli import FakeClaudeCLI
from tests.fakes.common import FakeReply
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

PRICES = {"input_price": Decimal(3), "output_price": Decimal(15), "cached_input_price": Decimal("0.3")}
MILLION = Decimal(1_000_000)
SYSTEM = "You are the platform's architect. " * 60  # long enough to be worth caching
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def fakes():
    servers = {"anthropic": FakeAnthropicServer(), "openai": FakeOpenAIServer(), "gemini": FakeGeminiServer()}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def claude_cli():
    cli = FakeClaudeCLI().start()
    yield cli
    cli.stop()


def persona_on(kind: str, fake, *, slug: str | None = None, **persona_fields) -> Persona:
    base_url = fake.base_url + "/v1" if kind == "openai" else fake.base_url
    provider = Provider.objects.filter(name=kind).first()
    if provider is None:
        provider = Provider(name=kind, kind=kind, base_url=base_url, read_timeout=10, connect_timeout=2)
        provider.set_credential(f"{kind}-test-credential")
        provider.save()
        Model.objects.create(provider=provider, name=fake.model, **PRICES)
    persona = Persona.objects.create(slug=slug or f"via-{kind}", **persona_fields)
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return persona


PROMPT_TOKENS = 5000  # what the fakes report a prompt as, by default: room for a cached prefix


@pytest.fixture
def routed(live, world, fakes):
    for kind, fake in fakes.items():
        fake.reset()
        fake.default_reply = FakeReply(input_tokens=PROMPT_TOKENS)
        persona_on(kind, fake)
    return fakes


def cost(fresh: int, cached: int, output: int) -> Decimal:
    return (fresh * PRICES["input_price"] + cached * PRICES["cached_input_price"]
            + output * PRICES["output_price"]) / MILLION


def saving(cached: int) -> Decimal:
    return cached * (PRICES["input_price"] - PRICES["cached_input_price"]) / MILLION


# -- cached input tokens, read and priced on every adapter ---------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_every_adapter_bills_cached_input_at_the_cached_price(live, world, routed, kind, stream):
    routed[kind].script(FakeReply(text="Cached.", input_tokens=1000, output_tokens=100, cached_tokens=600))
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    request = {"model": f"via-{kind}", "messages": [{"role": "user", "content": "Hello"}]}
    if stream:
        chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
        usage = next(c.usage for c in chunks if c.usage)
    else:
        usage = client.chat.completions.create(**request).usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (1000, 600)
    row = Usage.objects.get()
    assert (row.provider, row.input_tokens, row.cached_tokens, row.output_tokens) == (kind, 1000, 600, 100)
    assert row.cost_usd == cost(400, 600, 100)
    assert row.saved_usd == saving(600) and not row.cache_hit


def test_the_claude_agent_adapter_reads_cached_tokens_and_keeps_the_clis_cost(live, world, claude_cli):
    claude_cli.reset()
    provider = Provider.objects.create(name="claude", kind="claude_agent", options={"cli_path": claude_cli.cli_path})
    Model.objects.create(provider=provider, name=claude_cli.model, **PRICES)
    persona = Persona.objects.create(slug="via-claude")
    RouteStep.objects.create(persona=persona, provider=provider, model=claude_cli.model)
    claude_cli.script(FakeReply(text="Hi.", input_tokens=1000, output_tokens=100, cached_tokens=400))

    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    usage = client.chat.completions.create(model="via-claude", messages=[{"role": "user", "content": "Hi"}]).usage
    assert usage.prompt_tokens_details.cached_tokens == 400
    row = Usage.objects.get()
    assert (row.input_tokens, row.cached_tokens) == (1000, 400)
    # The CLI reports its own cost (the fake's: every input token at $3/M, none discounted).
    assert row.cost_usd == Decimal("0.0045")
    assert row.saved_usd == cost(1000, 0, 100) - Decimal("0.0045") == 0


# -- Anthropic cache_control through /v1/messages --------------------------------------------


def anthropic_sdk(live, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key=key, max_retries=0)


def test_cache_control_breakpoints_reach_anthropic_and_the_second_call_reads_the_cache(live, world, routed):
    fake = routed["anthropic"]
    tool = {"name": "lookup", "description": "Look a thing up", "cache_control": EPHEMERAL,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    request = {
        "model": "via-anthropic", "max_tokens": 100, "tools": [tool],
        "system": [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Plan the work.",
                                                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
    }
    first = anthropic_sdk(live, world.red_key).messages.create(**request)
    second = anthropic_sdk(live, world.red_key).messages.create(**request)

    sent = fake.requests[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}]
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "Plan the work.",
                                               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    written = first.usage.cache_creation_input_tokens
    assert written > 100 and first.usage.cache_read_input_tokens == 0
    assert (second.usage.cache_read_input_tokens, second.usage.cache_creation_input_tokens) == (written, 0)
    assert second.usage.input_tokens == PROMPT_TOKENS - written  # the fresh rest, as Anthropic counts it

    write_row, read_row = Usage.objects.order_by("created_at", "id")
    # A write costs 1.25x the input price (Anthropic's 5-minute entries): caching cost more this once.
    extra = written * PRICES["input_price"] * Decimal("0.25") / MILLION
    assert (write_row.cached_tokens, write_row.cost_usd) == (0, cost(PROMPT_TOKENS, 0, 8) + extra)
    assert write_row.saved_usd == -extra
    assert (read_row.input_tokens, read_row.cached_tokens) == (PROMPT_TOKENS, written)
    assert read_row.cost_usd == cost(PROMPT_TOKENS - written, written, 8)
    assert read_row.saved_usd == saving(written) > 0


def test_a_streamed_message_reports_the_cache_read_too(live, world, routed):
    request = {"model": "via-anthropic", "max_tokens": 100,
               "system": [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}],
               "messages": [{"role": "user", "content": "Hello"}]}
    client = anthropic_sdk(live, world.red_key)
    client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens > 0
    row = Usage.objects.get(stream=True)
    assert row.cached_tokens == final.usage.cache_read_input_tokens and row.saved_usd > 0


def test_a_malformed_cache_control_is_a_400_in_anthropics_shape(live, world, routed):
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_sdk(live, world.red_key).messages.create(
            model="via-anthropic", max_tokens=10,
            system=[{"type": "text", "text": "x", "cache_control": {"type": "forever"}}],
            messages=[{"role": "user", "content": "Hello"}])
    assert caught.value.body["type"] == "error"
    assert routed["anthropic"].call_count == 0
    assert Usage.objects.get().http_status == 400


def test_breakpoints_sent_to_another_provider_are_left_out(live, world, routed):
    anthropic_sdk(live, world.red_key).messages.create(
        model="via-openai", max_tokens=10, system=[{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}],
        messages=[{"role": "user", "content": "Hello"}])
    sent = routed["openai"].requests[-1]["body"]
    assert "cache_control" not in str(sent)
    assert sent["messages"][0]["role"] == "system" and SYSTEM.strip() in str(sent["messages"][0]["content"])


# -- the persona's system prompt on chat completions -------------------------------------------


def test_a_persona_caches_its_system_prompt_on_anthropic_for_chat_completions(live, world, routed):
    persona_on("anthropic", routed["anthropic"], slug="cached-architect", system_prompt=SYSTEM,
               prompt_cache_system=True)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    ask = {"model": "cached-architect", "messages": [{"role": "user", "content": "Plan the work."}]}
    client.chat.completions.create(**ask)
    second = client.chat.completions.create(**ask)

    sent = routed["anthropic"].requests[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}]
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 100
    row = Usage.objects.order_by("-created_at", "-id").first()
    assert (row.persona, row.cached_tokens, row.saved_usd) == ("cached-architect", cached, saving(cached))


def test_without_the_setting_or_off_anthropic_the_system_prompt_is_plain(live, world, routed):
    persona_on("anthropic", routed["anthropic"], slug="plain-architect", system_prompt=SYSTEM)
    persona_on("openai", routed["openai"], slug="openai-architect", system_prompt=SYSTEM, prompt_cache_system=True)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    for slug in ("plain-architect", "openai-architect"):
        client.chat.completions.create(model=slug, messages=[{"role": "user", "content": "Plan."}])
    assert routed["anthropic"].requests[-1]["body"]["system"] == SYSTEM
    assert routed["openai"].requests[-1]["body"]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert Usage.objects.filter(cached_tokens__gt=0).count() == 0


def test_the_budget_reservation_covers_writing_the_marked_prompt_to_the_cache(live, world, routed):
    """A cache write costs 1.25x plain input on Anthropic: a request with
    breakpoints reserves for writing its whole prompt, so a budget cannot be
    overrun by a write (the refusal states what the reservation would be)."""
    Budget.objects.create(name="tiny", scope="team", team=world.red, period="month", limit_usd=Decimal("0.000001"))
    client = anthropic_sdk(live, world.red_key)
    asked = {}
    for label, system in (("plain", [{"type": "text", "text": SYSTEM}]),
                          ("marked", [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}])):
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model="via-anthropic", max_tokens=100, system=system,
                                   messages=[{"role": "user", "content": "Plan the work."}])
        asked[label] = Decimal(re.search(r"may cost up to \$([0-9.]+[0-9])", caught.value.message).group(1))
    input_part = asked["plain"] - 100 * PRICES["output_price"] / MILLION  # the rest is the output ceiling
    # 1.25x on the input part; the message rounds to 4 places
    assert abs(asked["marked"] - asked["plain"] - input_part * Decimal("0.25")) <= Decimal("0.0001")
    assert asked["marked"] > asked["plain"]
    assert not routed["anthropic"].requests  # refused before any provider call
