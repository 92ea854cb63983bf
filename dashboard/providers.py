"""Dashboard pages for providers: status, settings with a write-only key,
models and prices, and a "test connection" button."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.audit import snapshot
from accounts.roles import async_operator_required, operator_required
from budgets import selectors
from dashboard.forms import ModelForm, ProviderForm
from dashboard.rendering import render_page, wants_fragment
from gateway.resilience import breaker_states
from providers import catalog, services
from providers.adapters.azure_openai import DEFAULT_API_VERSION as DEFAULT_AZURE_API_VERSION
from providers.cloud import VERTEX_KINDS
from providers.connection import connection_test
from providers.models import Model, Provider


@operator_required
@require_GET
def provider_list(request: HttpRequest) -> HttpResponse:
    stats = selectors.provider_stats(since=timezone.now() - timedelta(hours=1))
    providers = Provider.objects.prefetch_related("models", "route_steps").order_by("name")
    rows = [(p, stats.get(p.name), _open_breakers(p)) for p in providers]
    return render_page(request, "providers/list.html", {"rows": rows})


def _open_breakers(provider: Provider) -> list[str]:
    """Models of this provider whose circuit breaker is open or probing."""
    models = sorted({m.name for m in provider.models.all()} | {s.model for s in provider.route_steps.all()})
    return [f"{model} ({state.replace('_', '-')})"
            for model, state in breaker_states(provider.name, models).items() if state != "closed"]


def _save(request: HttpRequest, form: ProviderForm, before: dict | None) -> Provider:
    return services.provider_save(
        actor=request.user, provider=form.save(commit=False), before=before,
        credential=form.cleaned_data["credential"], clear_credential=form.cleaned_data["clear_credential"],
    )


@operator_required
@require_http_methods(["GET", "POST"])
def provider_create(request: HttpRequest) -> HttpResponse:
    form = ProviderForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        provider = _save(request, form, None)
        messages.success(request, f"Provider '{provider.name}' created. Add its models, then test the connection.")
        return redirect("providers:edit", name=provider.name)
    return render_page(request, "providers/edit.html", {"form": form}, status=400 if form.errors else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def provider_edit(request: HttpRequest, name: str) -> HttpResponse:
    provider = get_object_or_404(Provider, name=name)
    before = snapshot(provider, services.PROVIDER_FIELDS)
    form = ProviderForm(request.POST or None, instance=provider, user=request.user)
    if request.method == "POST" and form.is_valid():
        provider = _save(request, form, before)
        messages.success(request, f"Provider '{provider.name}' saved.")
        return redirect("providers:edit", name=provider.name)
    context = {"form": form, "provider": provider, "models": provider.models.all(),
               "model_form": ModelForm(provider=provider, prefix="new"), "facts": _cloud_facts(provider)}
    return render_page(request, "providers/edit.html", context, status=400 if form.errors else 200)


def _cloud_facts(provider: Provider) -> list[tuple[str, str]]:
    """Where a cloud provider's calls go and how they authenticate, in words, for its page."""
    options = provider.options or {}
    region, project = options.get("region", ""), options.get("project", "")
    if provider.kind == "azure_openai":
        entra = options.get("credential_type") == "entra_token"
        return [("Calls go to", f"{provider.base_url.rstrip('/')}/openai/deployments/<model>"),
                ("API version", options.get("api_version") or DEFAULT_AZURE_API_VERSION),
                ("Authenticates with", "a Microsoft Entra ID token" if entra else "an API key (api-key header)")]
    if provider.kind == "bedrock":
        role = options.get("credential_type") == "aws_role"
        signer = "the gateway host's AWS role" if role else "AWS access keys"
        if options.get("role_arn"):
            signer = f"the role {options['role_arn']}, assumed with {signer}"
        return [("Calls go to", provider.base_url or f"https://bedrock-runtime.{region}.amazonaws.com"),
                ("AWS region", region or "not set"), ("Authenticates with", f"{signer}, SigV4-signed")]
    if provider.kind in VERTEX_KINDS:
        return [("Calls go to", provider.base_url or f"https://{region}-aiplatform.googleapis.com"),
                ("Google Cloud project", project or "not set"), ("Location", region or "not set"),
                ("Authenticates with", "a Google service-account key or access token")]
    return []


@operator_required
@require_POST
def model_add(request: HttpRequest, name: str) -> HttpResponse:
    provider = get_object_or_404(Provider, name=name)
    form = ModelForm(request.POST, provider=provider, prefix="new")
    if form.is_valid():
        model = services.model_save(actor=request.user, model=form.save(commit=False), before=None)
        messages.success(request, f"Added model {model}.")
    else:
        messages.error(request, "The model was not added: " + "; ".join(e for errs in form.errors.values() for e in errs))
    return redirect("providers:edit", name=provider.name)


@operator_required
@require_http_methods(["GET", "POST"])
def model_edit(request: HttpRequest, name: str, model_id: int) -> HttpResponse:
    """One catalog entry: override its prices, limits or capabilities (a refresh never overwrites them)."""
    model = get_object_or_404(Model.objects.select_related("provider"), pk=model_id, provider__name=name)
    before = snapshot(model, services.MODEL_FIELDS)
    form = ModelForm(request.POST or None, instance=model, provider=model.provider)
    if request.method == "POST" and form.is_valid():
        services.model_save(actor=request.user, model=form.save(commit=False), before=before)
        messages.success(request, f"Saved model {model}.")
        return redirect("providers:edit", name=name)
    return render_page(request, "providers/model.html", {"form": form, "provider": model.provider, "model": model},
                       status=400 if form.errors else 200)


@require_POST
@async_operator_required
async def catalog_refresh(request: HttpRequest, name: str) -> HttpResponse:
    """Ask the provider which models it has (through its SDK), complete them from
    genai-prices, and add what is new (providers/catalog.py)."""
    provider = await Provider.objects.filter(name=name).afirst()
    if provider is None:
        return HttpResponse("No such provider.", status=404)
    listed, error = await catalog.listings(provider)
    source, found = catalog.entries(provider.kind, listed)
    refresh = await sync_to_async(catalog.catalog_save)(actor=request.user, provider=provider, source=source,
                                                        found=found, list_error=error)
    await sync_to_async(messages.add_message)(request, messages.WARNING if error else messages.SUCCESS,
                                              f"Model catalog of {provider.name}: {refresh.summary()}.")
    return redirect("providers:edit", name=name)


@operator_required
@require_POST
def model_delete(request: HttpRequest, name: str, model_id: int) -> HttpResponse:
    model = get_object_or_404(Model.objects.select_related("provider"), pk=model_id, provider__name=name)
    services.model_delete(actor=request.user, model=model)
    messages.success(request, f"Removed model {name}/{model.name}.")
    return redirect("providers:edit", name=name)


@require_POST
@async_operator_required
async def provider_test(request: HttpRequest, name: str) -> HttpResponse:
    provider = await Provider.objects.filter(name=name).afirst()
    if provider is None:
        return HttpResponse("No such provider.", status=404)
    result = await connection_test(provider.pk)
    if wants_fragment(request):
        return HttpResponse(
            f'<p class="msg {"success" if result.ok else "error"}" role="status">{escape(result.sentence)}</p>'
        )
    # Plain form post: the message goes through the (sync) session store.
    await sync_to_async(messages.add_message)(request, messages.SUCCESS if result.ok else messages.ERROR,
                                              result.sentence)
    return redirect("providers:edit", name=name)
