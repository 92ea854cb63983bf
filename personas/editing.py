"""Dashboard writes to personas and their routes; each leaves an AuditEntry."""

from __future__ import annotations

from django.db import transaction

from accounts.audit import audit_record, changed, snapshot
from personas.models import Persona, RouteStep
from personas.services import ImportResult, persona_map_export, persona_map_import
from providers.models import Provider

PERSONA_FIELDS = ["slug", "name", "description", "system_prompt", "default_params", "max_output_tokens", "enabled"]


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
