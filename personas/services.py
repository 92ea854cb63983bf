"""Writes to personas: demo personas and the seed's persona map format.

The map is `{"architect": {"provider": "openai", "model": "gpt-4",
"fallback": [{"provider": "demo", "model": "demo"}]}, ...}`: the first step is
provider/model, the optional ordered `fallback` list follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from accounts.audit import audit_record, changed, snapshot
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
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict) or not isinstance(step.get("provider"), str) or not step["provider"]:
            raise PersonaMapError(f"Persona '{slug}', step {number}: every step needs a \"provider\" name.")
        if not isinstance(step.get("model") or "", str):
            raise PersonaMapError(f"Persona '{slug}', step {number}: \"model\" must be a string.")
    return steps


def _checked(where: str, instance: Persona | RouteStep) -> None:
    """The model's own validators, as the dashboard's editor runs them
    (PersonaForm and StepForm end in the same full_clean); the first problem
    refuses the whole map, naming the entry."""
    try:
        instance.full_clean()
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        detail = messages[0] if field == NON_FIELD_ERRORS else f"{field}: {messages[0]}"
        raise PersonaMapError(f"{where}: {detail}") from None


def _persona_for(slug: str) -> Persona:
    persona = Persona.objects.filter(slug=slug).first()
    if persona is None:
        persona = Persona(slug=slug, name=slug.replace("_", " ").title()[:100])
        _checked(f"Persona '{slug}'", persona)
        persona.save()
    return persona


@transaction.atomic
def persona_map_import(data: dict) -> ImportResult:
    """Replace the route of each persona the map names. All or nothing: the
    first invalid entry raises PersonaMapError and the transaction undoes the
    entries before it."""
    if not isinstance(data, dict):
        raise PersonaMapError("The persona map must be a JSON object of persona -> {provider, model}.")
    result = ImportResult([], [])
    for slug, entry in data.items():
        steps = _steps_of(slug, entry)
        persona = _persona_for(slug)
        persona.steps.all().delete()
        for position, step in enumerate(steps):
            provider = _provider_for(step["provider"], result.providers_created)
            route_step = RouteStep(persona=persona, position=position, provider=provider,
                                   model=step.get("model") or DEFAULT_MODELS.get(provider.kind, provider.kind),
                                   params=step.get("params") or {})
            _checked(f"Persona '{slug}', step {position + 1}", route_step)
            route_step.save()
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


# -- dashboard edits, each with its audit entry -------------------------------------


PERSONA_FIELDS = ["slug", "name", "description", "system_prompt", "default_params", "max_output_tokens", "enabled",
                  "cache_enabled", "cache_ttl_seconds", "cache_any_temperature", "cache_shared", "prompt_cache_system"]


def chain_of(persona: Persona) -> list[str]:
    """The route as people read it: provider/model in order, with params."""
    return [
        f"{s.provider.name}/{s.model}" + (f" {s.params}" if s.params else "")
        for s in persona.steps.select_related("provider").order_by("position", "id")
    ]


def _renumber(persona: Persona, steps: list[RouteStep]) -> None:
    for position, step in enumerate(steps):
        if step.position != position:
            step.position = position
            step.save(update_fields=["position"])


def _ordered(persona: Persona) -> list[RouteStep]:
    return list(persona.steps.select_related("provider").order_by("position", "id"))


def _audit_chain(actor, persona: Persona, action: str, before: list[str], summary: str) -> None:
    audit_record(actor=actor, action=action, target=persona, label=persona.slug, summary=summary,
                 before={"route": before}, after={"route": chain_of(persona)})


@transaction.atomic
def persona_save(*, actor, persona: Persona, before: dict | None) -> Persona:
    """Save a created or edited persona (already validated by its form)."""
    persona.save()
    after = snapshot(persona, PERSONA_FIELDS)
    fields = changed(before, after)
    verb = "Created" if before is None else "Changed " + ", ".join(fields) + " of"
    audit_record(actor=actor, action="persona.create" if before is None else "persona.update", target=persona,
                 label=persona.slug, summary=f"{verb} persona '{persona.slug}'", before=before, after=after)
    return persona


@transaction.atomic
def route_step_add(*, actor, persona: Persona, provider: Provider, model: str, params: dict,
                   fallback_on_client_error: bool = False) -> RouteStep:
    before = chain_of(persona)
    step = RouteStep.objects.create(persona=persona, position=len(before), provider=provider, model=model,
                                    params=params, fallback_on_client_error=fallback_on_client_error)
    _audit_chain(actor, persona, "route.add", before,
                 f"Added {provider.name}/{model} as step {len(before) + 1} of '{persona.slug}'")
    return step


@transaction.atomic
def route_step_update(*, actor, step: RouteStep, provider: Provider, model: str, params: dict,
                      fallback_on_client_error: bool) -> RouteStep:
    persona = step.persona
    before = chain_of(persona)
    step.provider, step.model, step.params = provider, model, params
    step.fallback_on_client_error = fallback_on_client_error
    step.save()
    position = _ordered(persona).index(step) + 1
    _audit_chain(actor, persona, "route.update", before,
                 f"Step {position} of '{persona.slug}' now calls {provider.name}/{model}")
    return step


@transaction.atomic
def route_step_remove(*, actor, step: RouteStep) -> None:
    persona = step.persona
    before = chain_of(persona)
    label = f"{step.provider.name}/{step.model}"
    step.delete()
    _renumber(persona, _ordered(persona))
    _audit_chain(actor, persona, "route.remove", before, f"Removed {label} from '{persona.slug}'")


@transaction.atomic
def route_step_move(*, actor, step: RouteStep, offset: int) -> bool:
    """Move a step up (-1) or down (+1); False when it is already at that end."""
    persona = step.persona
    steps = _ordered(persona)
    index = next(i for i, s in enumerate(steps) if s.pk == step.pk)
    target = index + offset
    if not 0 <= target < len(steps):
        return False
    before = chain_of(persona)
    steps[index], steps[target] = steps[target], steps[index]
    _renumber(persona, steps)
    _audit_chain(actor, persona, "route.reorder", before,
                 f"Moved {step.provider.name}/{step.model} to step {target + 1} of '{persona.slug}'")
    return True


@transaction.atomic
def persona_map_import_audited(*, actor, data: dict) -> ImportResult:
    before = persona_map_export()
    result = persona_map_import(data)
    audit_record(actor=actor, action="persona_map.import", target_type="persona_map", label="persona map",
                 summary=f"Imported the persona map: {', '.join(result.personas) or 'no personas'}",
                 before=before, after=persona_map_export())
    return result
