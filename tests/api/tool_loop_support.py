"""Shared by the server-side tool loop tests: personas on the three fakes whose
tools (the built-in current_time and run_cost) the platform runs."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
from django.db import connections

from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer
from tools.catalog import builtin_server
from tools.models import PersonaTools, Tool, ToolCallLog, ToolGrant

FAKE_CLASSES = {"openai": FakeOpenAIServer, "anthropic": FakeAnthropicServer, "gemini": FakeGeminiServer}
KINDS = sorted(FAKE_CLASSES)


def fakes_running():
    """For a module-scoped `fakes` fixture: the three fakes, stopped at the end."""
    started = {kind: cls().start() for kind, cls in FAKE_CLASSES.items()}
    yield started
    for fake in started.values():
        fake.stop()


def tooled_persona(kind: str, fake, *, slug: str | None = None, execute: bool = True, **caps) -> Persona:
    """A persona on `kind`'s fake (prices 1 / 2 USD per M tokens) offering the built-in tools."""
    provider = Provider.objects.filter(name=kind).first()
    if provider is None:
        base_url = fake.base_url + "/v1" if kind == "openai" else fake.base_url
        provider = Provider(name=kind, kind=kind, base_url=base_url, read_timeout=5)
        provider.set_credential(f"sk-test-{kind}")
        provider.save()
        Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug=slug or f"tools-{kind}")
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    settings = PersonaTools.objects.create(persona=persona, execute=execute, **caps)
    settings.tools.set(Tool.objects.filter(server__name="builtin"))
    return persona


def tooled_setup(fakes, world):
    """For a `tooled` fixture: `tools-openai`, `tools-anthropic`, `tools-gemini`: execute on; team red may use builtin__*."""
    _in_a_thread(lambda: asyncio.run(builtin_server()))
    ToolGrant.objects.create(team=world.red, patterns=["builtin__*"])
    for kind, fake in fakes.items():
        fake.reset()
        tooled_persona(kind, fake)
    return fakes


def sdk(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def rows(run_id: str) -> list[Usage]:
    return list(Usage.objects.filter(run_id=run_id).order_by("created_at", "id"))


def tool_rows(run_id: str) -> list[ToolCallLog]:
    return list(ToolCallLog.objects.filter(run_id=run_id).order_by("at", "id"))


def cost(reply_in: int, reply_out: int) -> Decimal:
    """What a fake's reply costs at 1 / 2 USD per M tokens."""
    return (Decimal(reply_in) * 1 + Decimal(reply_out) * 2) / Decimal(1_000_000)


def _in_a_thread(work) -> None:
    """Run `work` on a thread of its own: the browser tests' thread has Playwright's event loop."""
    def run() -> None:
        try:
            work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()
