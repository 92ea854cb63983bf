"""What the request path knows of personas and their routes, held in memory (gateway/config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from personas.models import Persona
from providers.snapshot import ProviderInfo


@dataclass(frozen=True, slots=True)
class StepInfo:
    position: int
    provider: ProviderInfo
    model: str
    params: dict[str, Any]
    weight: int
    fallback_on_client_error: bool


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How a persona's response cache behaves (gateway/response_cache.py)."""

    ttl_seconds: int
    any_temperature: bool  # else only requests at temperature 0 are cached
    shared: bool  # one cache for every team, else one per team


@dataclass(frozen=True, slots=True)
class PersonaInfo:
    slug: str
    name: str
    system_prompt: str
    default_params: dict[str, Any]
    max_output_tokens: int | None
    steps: tuple[StepInfo, ...]
    # None when the response cache is off: the request path tests only this.
    cache: CachePolicy | None = None
    prompt_cache_system: bool = False  # cache_control on the system prompt for Anthropic steps


def load_personas(providers_by_id: dict[int, ProviderInfo]) -> dict[str, PersonaInfo]:
    personas: dict[str, PersonaInfo] = {}
    for persona in Persona.objects.filter(enabled=True).prefetch_related("steps"):
        steps = tuple(
            StepInfo(s.position, providers_by_id[s.provider_id], s.model, dict(s.params or {}), s.weight,
                     s.fallback_on_client_error)
            for s in persona.steps.all()
        )
        personas[persona.slug] = PersonaInfo(
            persona.slug, persona.name, persona.system_prompt, dict(persona.default_params or {}),
            persona.max_output_tokens, steps, _cache_policy(persona), persona.prompt_cache_system,
        )
    return personas


def _cache_policy(persona: Persona) -> CachePolicy | None:
    if not persona.cache_enabled:
        return None
    return CachePolicy(persona.cache_ttl_seconds, persona.cache_any_temperature, persona.cache_shared)
