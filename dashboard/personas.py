"""Dashboard pages for personas: list, create, edit, the fallback chain edited
in place (htmx fragments; every button also works as a plain form post), and
the persona map's import and export."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.audit import snapshot
from accounts.roles import operator_required
from budgets import pricing
from dashboard.forms import ImportForm, PersonaForm, StepForm
from dashboard.rendering import render_page, wants_fragment
from personas import services
from personas.models import Persona, RouteStep
from personas.services import PersonaMapError, persona_map_export
from providers.models import Model, Provider
from providers.snapshot import provider_info


@operator_required
@require_GET
def persona_list(request: HttpRequest) -> HttpResponse:
    personas = Persona.objects.prefetch_related("steps__provider")
    return render_page(request, "personas/list.html", {"personas": personas, "import_form": ImportForm()})


@operator_required
@require_http_methods(["GET", "POST"])
def persona_create(request: HttpRequest) -> HttpResponse:
    form = PersonaForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        persona = services.persona_save(actor=request.user, persona=form.save(commit=False), before=None)
        messages.success(request, f"Persona '{persona.slug}' created. Now give it a route.")
        return redirect("personas:edit", slug=persona.slug)
    return render_page(request, "personas/form.html", {"form": form}, status=400 if form.errors else 200)


def _focus(index: int, count: int, direction: str | None) -> str | None:
    """Which move button keeps keyboard focus after a move: the same one,
    unless the step reached that end of the chain (its button is disabled)."""
    if direction == "up":
        return "up" if index > 0 else ("down" if count > 1 else None)
    if direction == "down":
        return "down" if index < count - 1 else ("up" if count > 1 else None)
    return None


# What the route editor prices as "a typical call" on each step.
TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS = 1000, 500


def catalog_facts(provider: Provider, model_name: str, catalog: dict[tuple[int, str], Model]) -> dict:
    """A step's model as the catalog knows it: the row (None: a custom name), and
    what a typical call costs there (catalog price, else the bundled price list)."""
    model = catalog.get((provider.pk, model_name))
    info = provider_info(provider, [model] if model is not None else []).models.get(model_name)
    typical = pricing.worst_case_cost(kind=provider.kind, model=model_name, info=info,
                                      input_tokens=TYPICAL_INPUT_TOKENS, max_output=TYPICAL_OUTPUT_TOKENS)
    return {"model": model, "typical_cost": typical}


def _chain_context(persona: Persona, *, focus: int | None = None, focus_dir: str | None = None,
                   add_form: StepForm | None = None, **extra) -> dict:
    steps = list(persona.steps.select_related("provider").order_by("position", "id"))
    providers = list(Provider.objects.prefetch_related("models").order_by("name"))
    catalog = {(p.pk, m.name): m for p in providers for m in p.models.all()}
    rows = [
        {"step": step, "focus": _focus(i, len(steps), focus_dir) if step.pk == focus else None,
         "catalog": catalog_facts(step.provider, step.model, catalog),
         "form": StepForm(prefix=f"s{step.pk}", initial={
             "provider": step.provider.name, "model": step.model, "params": step.params,
             "fallback_on_client_error": step.fallback_on_client_error})}
        for i, step in enumerate(steps)
    ]
    return {"persona": persona, "step_rows": rows, "add_form": add_form or StepForm(prefix="new"),
            "providers": providers, "typical_tokens": (TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS), **extra}


@operator_required
@require_http_methods(["GET", "POST"])
def persona_edit(request: HttpRequest, slug: str) -> HttpResponse:
    persona = get_object_or_404(Persona, slug=slug)
    before = snapshot(persona, services.PERSONA_FIELDS)
    form = PersonaForm(request.POST or None, instance=persona)
    if request.method == "POST" and form.is_valid():
        persona = services.persona_save(actor=request.user, persona=form.save(commit=False), before=before)
        messages.success(request, f"Persona '{persona.slug}' saved.")
        return redirect("personas:edit", slug=persona.slug)
    context = _chain_context(persona, form=form)
    return render_page(request, "personas/edit.html", context, status=400 if form.errors else 200)


def _chain_response(request: HttpRequest, persona: Persona, *, status: int = 200, **extra) -> HttpResponse:
    """htmx gets the chain fragment; a plain form post goes back to the page."""
    if wants_fragment(request):
        return render_page(request, "personas/edit.html", _chain_context(persona, **extra), fragment="chain",
                           status=status)
    if extra.get("chain_error"):
        messages.error(request, extra["chain_error"])
    return redirect("personas:edit", slug=persona.slug)


@operator_required
@require_POST
def step_add(request: HttpRequest, slug: str) -> HttpResponse:
    persona = get_object_or_404(Persona, slug=slug)
    form = StepForm(request.POST, prefix="new")
    if not form.is_valid():
        return _chain_response(request, persona, chain_error=_first_error(form), add_form=form)
    data = form.cleaned_data
    step = services.route_step_add(actor=request.user, persona=persona, provider=data["provider"], model=data["model"],
                                  params=data["params"], fallback_on_client_error=data["fallback_on_client_error"])
    return _chain_response(request, persona, notice=f"Added {step.provider.name}/{step.model} as the last step.")


@operator_required
@require_POST
def step_update(request: HttpRequest, slug: str, step_id: int) -> HttpResponse:
    step = get_object_or_404(RouteStep.objects.select_related("persona"), pk=step_id, persona__slug=slug)
    form = StepForm(request.POST, prefix=f"s{step.pk}")
    if not form.is_valid():
        return _chain_response(request, step.persona, chain_error=_first_error(form), focus=step.pk)
    data = form.cleaned_data
    services.route_step_update(actor=request.user, step=step, provider=data["provider"], model=data["model"],
                              params=data["params"], fallback_on_client_error=data["fallback_on_client_error"])
    return _chain_response(request, step.persona, notice=f"Saved {data['provider'].name}/{data['model']}.")


@operator_required
@require_POST
def step_move(request: HttpRequest, slug: str, step_id: int, direction: str) -> HttpResponse:
    if direction not in ("up", "down"):
        raise Http404("Steps move up or down.")
    step = get_object_or_404(RouteStep.objects.select_related("persona", "provider"), pk=step_id, persona__slug=slug)
    moved = services.route_step_move(actor=request.user, step=step, offset=-1 if direction == "up" else 1)
    notice = f"Moved {step.provider.name}/{step.model} {direction}." if moved else "That step is already there."
    return _chain_response(request, step.persona, notice=notice, focus=step.pk, focus_dir=direction)


@operator_required
@require_POST
def step_remove(request: HttpRequest, slug: str, step_id: int) -> HttpResponse:
    step = get_object_or_404(RouteStep.objects.select_related("persona", "provider"), pk=step_id, persona__slug=slug)
    persona, label = step.persona, f"{step.provider.name}/{step.model}"
    services.route_step_remove(actor=request.user, step=step)
    return _chain_response(request, persona, notice=f"Removed {label} from the route.")


def _first_error(form) -> str:
    for field, errors in form.errors.items():
        label = (form.fields[field].label or field.replace("_", " ").capitalize()) if field in form.fields else ""
        return f"{label}: {errors[0]}" if label else errors[0]
    return "Check the step."


@operator_required
@require_GET
def map_export(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(json.dumps(persona_map_export(), indent=2) + "\n", content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="persona_provider_map.json"'
    return response


@operator_required
@require_POST
def map_import(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            result = services.persona_map_import_audited(actor=request.user, data=form.cleaned_data["map"])
        except PersonaMapError as error:
            messages.error(request, f"Nothing was imported: {error}")
        else:
            created = f" New providers, disabled until configured: {', '.join(result.providers_created)}." \
                if result.providers_created else ""
            messages.success(request, f"Imported {len(result.personas)} personas: {', '.join(result.personas)}.{created}")
    else:
        messages.error(request, "Nothing was imported: " + " ".join(form.non_field_errors()))
    return redirect("personas:list")
