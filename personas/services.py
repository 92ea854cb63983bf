"""Writes to personas: demo personas and the seed's persona map format.

The map is `{"architect": {"provider": "openai", "model": "gpt-4",
"fallback": [{"provider": "demo", "model": "demo"}]}, ...}`: the first step is
provider/model, the optional ordered `fallback` list follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from personas.models import Persona, RouteStep
from providers.adapters import ADAPTERS
from providers.models import Provider
from providers.services import DEFAULT_MODELS

DEMO_PERSONAS = {
    "architect": "You are the team's software architect: you design systems and explain trade-offs.",
    "developer": "You are the team's developer: you write clear, tested code.",
    "reviewer": "You are the team's code reviewer: you find bugs and explain them plainly.",
}


class PersonaMapError(ValueError):
    pass


@dataclass
class ImportResult:
    personas: list[str]
    providers_created: list[str]


def demo_personas_ensure(provider: Provider) -> list[str]:
    """Create the demo personas that do not exist yet, routed to the demo provider."""
    created = []
    for slug, prompt in DEMO_PERSONAS.items():
        persona, is_new = Persona.objects.get_or_create(
            slug=slug, defaults={"name": slug.title(), "system_prompt": prompt}
        )
        if is_new:
            RouteStep.objects.create(persona=persona, position=0, provider=provider, model="demo")
            created.append(slug)
    return created


def _provider_for(name: str, created: list[str]) -> Provider:
    provider = Provider.objects.filter(name=name).first()
    if provider is not None:
        return provider
    if name not in ADAPTERS:
        known = ", ".join(sorted(Provider.objects.values_list("name", flat=True)))
        raise PersonaMapError(f"Unknown provider '{name}'. Configured providers: {known or 'none'}.")
    # A provider named by its kind that is not configured yet: create it
    # disabled, so the map imports and the route falls through to the next step
    # until an operator sets its credential and enables it.
    created.append(name)
    return Provider.objects.create(name=name, kind=name, enabled=False)


def _steps_of(slug: str, entry) -> list[dict]:
    if not isinstance(entry, dict) or not entry.get("provider"):
        raise PersonaMapError(f"Persona '{slug}' needs at least a \"provider\".")
    fallback = entry.get("fallback") or []
    if not isinstance(fallback, list):
        raise PersonaMapError(f"Persona '{slug}': \"fallback\" must be a list of {{provider, model}}.")
    steps = [entry, *fallback]
    for step in steps:
        if not isinstance(step, dict) or not step.get("provider"):
            raise PersonaMapError(f"Persona '{slug}': every fallback step needs a \"provider\".")
    return steps


@transaction.atomic
def persona_map_import(data: dict) -> ImportResult:
    if not isinstance(data, dict):
        raise PersonaMapError("The persona map must be a JSON object of persona -> {provider, model}.")
    result = ImportResult([], [])
    for slug, entry in data.items():
        steps = _steps_of(slug, entry)
        persona, _ = Persona.objects.get_or_create(slug=slug, defaults={"name": slug.replace("_", " ").title()})
        persona.steps.all().delete()
        for position, step in enumerate(steps):
            provider = _provider_for(step["provider"], result.providers_created)
            RouteStep.objects.create(
                persona=persona,
                position=position,
                provider=provider,
                model=step.get("model") or DEFAULT_MODELS.get(provider.kind, provider.kind),
                params=step.get("params") or {},
            )
        result.personas.append(slug)
    return result


def persona_map_export() -> dict:
    out: dict = {}
    for persona in Persona.objects.prefetch_related("steps__provider"):
        steps = [{"provider": s.provider.name, "model": s.model, **({"params": s.params} if s.params else {})}
                 for s in persona.steps.all()]
        if not steps:
            continue
        out[persona.slug] = {**steps[0], **({"fallback": steps[1:]} if steps[1:] else {})}
    return out
