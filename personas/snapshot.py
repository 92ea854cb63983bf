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
class PersonaInfo:
    slug: str
    name: str
    system_prompt: str
    default_params: dict[str, Any]
    max_output_tokens: int | None
    steps: tuple[StepInfo, ...]


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
            persona.max_output_tokens, steps,
        )
    return personas
