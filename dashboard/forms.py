"""The dashboard's forms: what operators and team leads may type, checked before any service runs."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator

from accounts.models import SCOPES, Membership, Team
from accounts.services import TEAM_ROLES, USER_ROLES
from budgets.models import Budget, Usage
from personas.models import Persona, params_validate
from providers.adapters.openai import RESPONSES_API_MODES
from providers.cloud import CLOUD_OPTIONS, CREDENTIAL_TYPES, cloud_options_errors, credential_validate
from providers.models import Model, Provider, model_name_validate

# -- teams, keys and memberships -----------------------------------------------


class KeyForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    name = forms.CharField(max_length=100, help_text="Who uses it, e.g. 'hive production'.")
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES], initial=["chat"], widget=forms.CheckboxSelectMultiple,
        help_text="chat: call personas; direct: also name provider/model; admin: the management API.",
    )


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name"]


class MembershipForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.ROLES)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if not get_user_model().objects.filter(username=username).exists():
            raise forms.ValidationError(f"There is no user '{username}'. Invite them first (Invite a person).")
        return username


class InviteForm(forms.Form):
    """A new dashboard user: a lead or member belongs to a team; an operator or
    admin sees every team and needs none."""

    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(required=False, help_text="If given, the invitation link is mailed there too.")
    role = forms.ChoiceField(choices=USER_ROLES, initial="lead")
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"), required=False,
                                  help_text="For a team lead or member.")

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(f"There is already a user '{username}'.")
        return username

    def clean(self) -> dict:
        data = super().clean()
        if data.get("role") in TEAM_ROLES and not data.get("team"):
            self.add_error("team", "A team lead or member needs a team.")
        return data


# -- personas and their routes -------------------------------------------------


def parse_params(text: str) -> dict:
    """The JSON a params box holds, checked by the same rules as every other
    way params are set (personas.models.params_validate)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(f"Parameters are not valid JSON: {error.msg} (line {error.lineno}).")
    params_validate(value)
    return value


class ParamsField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 1, "spellcheck": "false"})

    def __init__(self, **kwargs) -> None:
        super().__init__(required=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value) if value else ""
        return value

    def clean(self, value) -> dict:
        return parse_params(super().clean(value))


class PersonaForm(forms.ModelForm):
    default_params = ParamsField(label="Default parameters (JSON)")

    class Meta:
        model = Persona
        fields = ["slug", "name", "description", "system_prompt", "default_params", "max_output_tokens", "enabled",
                  "cache_enabled", "cache_ttl_seconds", "cache_any_temperature", "cache_shared", "prompt_cache_system"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2}), "system_prompt": forms.Textarea(attrs={"rows": 4})}


class StepForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=Provider.objects.order_by("name"), to_field_name="name")
    model = forms.CharField(max_length=200)
    params = ParamsField(label="Parameters (JSON)")
    fallback_on_client_error = forms.BooleanField(required=False, label="Also fall back on bad requests")

    def clean_model(self) -> str:
        model = self.cleaned_data["model"].strip()
        if not model:
            raise forms.ValidationError("Name the model this step calls.")
        model_name_validate(model)
        return model


class ImportForm(forms.Form):
    file = forms.FileField(required=False, label="Persona map file (JSON)")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}), label="…or paste it here")

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        raw = upload.read().decode("utf-8", "replace") if upload else data.get("text", "")
        if not raw.strip():
            raise forms.ValidationError("Choose a file or paste the persona map.")
        try:
            data["map"] = json.loads(raw)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"The persona map is not valid JSON: {error.msg} (line {error.lineno}).")
        return data


# -- providers and models ------------------------------------------------------


class ProviderForm(forms.ModelForm):
    # Never rendered back: the field is always empty; leaving it empty keeps
    # the stored credential.
    credential = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        label="API key",
        help_text="Write-only: leave empty to keep the stored key. AWS Bedrock: "
                  '{"access_key_id": "AKIA...", "secret_access_key": "...", "session_token": "..." (optional)}. '
                  "Vertex AI: a service-account key file (its JSON) or an OAuth access token.",
    )
    clear_credential = forms.BooleanField(required=False, label="Remove the stored API key")
    options = ParamsField(label="Adapter options (JSON)")
    base_url = forms.URLField(required=False, assume_scheme="https", label="Base URL",
                              help_text="Empty means the provider's public API. Azure OpenAI: the resource's "
                                        "endpoint, e.g. https://my-resource.openai.azure.com.")
    # The cloud kinds' settings, kept in options (providers/cloud.py checks them).
    region = forms.CharField(required=False, max_length=30, label="Region or location",
                             help_text="AWS Bedrock: the AWS region (eu-central-1). Vertex AI: the location "
                                       "(europe-west4, us-east5 for Claude).")
    project = forms.CharField(required=False, max_length=100, label="Google Cloud project",
                              help_text="Vertex AI: the project id the models are billed to.")
    api_version = forms.CharField(required=False, max_length=40, label="Azure API version",
                                  help_text="Azure OpenAI: the api-version every call carries; empty means 2024-10-21.")
    credential_type = forms.ChoiceField(
        required=False, label="Credential type",
        choices=[("", "the kind's usual one")] + [(k, label) for k, (label, _) in CREDENTIAL_TYPES.items()],
        help_text="Azure OpenAI: an API key (default) or an Entra ID token. AWS Bedrock: access keys (default) or "
                  "the gateway host's own role (no key stored).",
    )
    role_arn = forms.CharField(required=False, max_length=600, label="AWS role to assume (ARN)",
                               help_text="AWS Bedrock, optional: the keys (or the host's role) assume this role, "
                                         "e.g. in the account that holds the Bedrock quota.")
    external_id = forms.CharField(required=False, max_length=1224, label="External id",
                                  help_text="AWS Bedrock, optional: the external id the role's trust policy asks for.")

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "enabled", "connect_timeout", "read_timeout", "options"]

    field_order = ["name", "kind", "base_url", "region", "project", "api_version", "credential_type", "role_arn",
                   "external_id", "credential", "clear_credential", "enabled", "connect_timeout", "read_timeout",
                   "options"]

    # Where a provider points and what it runs (options such as claude_agent's
    # cli_path) are for admins only: an operator who could aim the stored
    # credential and every prompt at any URL could exfiltrate both (docs/SECURITY.md).
    # The cloud fields above stay open to operators: they are plain identifiers
    # that cannot leave the provider's own endpoint (providers/cloud.py).
    ADMIN_ONLY = ("base_url", "options")

    # Which kinds each cloud field is for: dashboard.js shows a field only for those
    # kinds (without the script every field shows, each help text naming its kinds).
    FIELD_KINDS = {"region": "bedrock vertex_gemini vertex_anthropic", "project": "vertex_gemini vertex_anthropic",
                   "api_version": "azure_openai", "credential_type": "azure_openai bedrock", "role_arn": "bedrock",
                   "external_id": "bedrock"}

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, kinds in self.FIELD_KINDS.items():
            self.fields[name].widget.attrs["data-kinds"] = kinds
        for name in CLOUD_OPTIONS:
            if self.instance.kind in self.FIELD_KINDS[name].split():
                self.initial.setdefault(name, (self.instance.options or {}).get(name, ""))
        if user is None or not user.is_superuser:
            for name in self.ADMIN_ONLY:
                field = self.fields[name]
                field.disabled = True
                field.help_text = "Only an admin may change this."
                # A disabled field cleans its initial value: give it in the posted (text) form.
                self.initial[name] = field.prepare_value(self.initial.get(name, field.initial))
        if not self.instance.has_credential:  # nothing stored (a new provider): nothing to remove
            del self.fields["clear_credential"]
            self.fields["credential"].help_text = self.fields["credential"].help_text.replace(
                "leave empty to keep the stored key", "never shown again once saved")

    def clean(self) -> dict:
        data = super().clean()
        mode = (data.get("options") or {}).get("responses_api")
        if data.get("kind") == "openai" and mode is not None and mode not in RESPONSES_API_MODES:
            self.add_error("options", f"responses_api must be one of {', '.join(RESPONSES_API_MODES)}.")
        data.setdefault("clear_credential", False)  # the views read it whether or not it was offered
        kind = data.get("kind") or self.instance.kind
        options = self._options_with_cloud_fields(data, kind)
        for name, message in cloud_options_errors(kind=kind, base_url=data.get("base_url") or "",
                                                  options=options).items():
            self.add_error(name, message)
        if data.get("credential"):
            try:
                credential_validate(kind=kind, options=options, credential=data["credential"])
            except forms.ValidationError as error:
                self.add_error("credential", error)
        data["options"] = options
        return data

    def _options_with_cloud_fields(self, data: dict, kind: str) -> dict:
        """The options with the cloud fields of this kind written in. Other kinds' fields
        are left out: `project` means an OpenAI project to the openai kind, set in options."""
        options = dict(data.get("options") or {})
        for name in CLOUD_OPTIONS:
            if kind not in self.FIELD_KINDS[name].split():
                continue
            value = (data.get(name) or "").strip()
            if value:
                options[name] = value
            else:
                options.pop(name, None)
        return options

    def save(self, commit: bool = True) -> Provider:
        self.instance.options = self.cleaned_data["options"]
        return super().save(commit=commit)


class ModelForm(forms.ModelForm):
    class Meta:
        model = Model
        fields = ["name", "input_price", "output_price", "cached_input_price", "cache_write_price", "context_window",
                  "max_output_tokens", "supports_tools", "supports_images", "supports_json_schema",
                  "supports_reasoning", "supports_embeddings", "enabled"]
        labels = {"input_price": "Input $/M tokens", "output_price": "Output $/M tokens",
                  "cached_input_price": "Cached input $/M tokens", "cache_write_price": "Cache write $/M tokens",
                  "context_window": "Context window (tokens)",
                  "max_output_tokens": "Max output tokens", "supports_tools": "Tools", "supports_images": "Images",
                  "supports_json_schema": "JSON schema", "supports_reasoning": "Reasoning",
                  "supports_embeddings": "Embeddings"}

    def __init__(self, *args, provider: Provider, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instance.provider = provider

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = Model.objects.filter(provider=self.instance.provider, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f"{self.instance.provider.name} already has a model '{name}'.")
        return name


# -- budgets and the usage filter ----------------------------------------------


class ThresholdsField(forms.CharField):
    def prepare_value(self, value):
        return ", ".join(str(v) for v in value) if isinstance(value, list) else value

    def clean(self, value) -> list[int]:
        text = super().clean(value) or ""
        try:
            numbers = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
        except ValueError:
            raise forms.ValidationError("Thresholds are whole percentages separated by commas, e.g. 50, 80, 100.")
        if any(not 1 <= n <= 1000 for n in numbers):
            raise forms.ValidationError("Each threshold is a percentage from 1 to 1000.")
        return numbers


class BudgetForm(forms.ModelForm):
    thresholds = ThresholdsField(required=False, initial="50, 80, 100", help_text="Alert at these percentages.")

    class Meta:
        model = Budget
        fields = ["name", "scope", "team", "api_key", "persona", "period", "limit_usd", "hard", "thresholds", "enabled"]
        labels = {"limit_usd": "Limit (USD)", "api_key": "API key", "hard": "Refuse requests over the limit"}

    def clean(self) -> dict:
        data = super().clean()
        scope = data.get("scope")
        target = {"team": "team", "key": "api_key", "persona": "persona"}.get(scope)
        if target and not data.get(target):
            self.add_error(target, f"A {scope} budget needs a {self.fields[target].label.lower()}.")
        for other in ("team", "api_key", "persona"):
            if other != target:
                data[other] = None  # a global budget must not silently carry a team
        limit = data.get("limit_usd")
        if limit is not None and limit <= 0:
            self.add_error("limit_usd", "The limit must be more than $0.")
        return data


class UsageFilterForm(forms.Form):
    team = forms.IntegerField(required=False, widget=forms.HiddenInput)
    persona = forms.CharField(required=False)
    provider = forms.CharField(required=False)
    model = forms.CharField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "any")] + Usage.STATUSES)
    run_id = forms.CharField(required=False, label="Run id")
    calls = forms.ChoiceField(required=False, label="Calls", choices=[
        ("", "all calls"), ("model", "model calls"), ("other", "other calls (models list, costs, runs…)")])
    endpoint = forms.CharField(required=False, help_text="e.g. v1.chat.completions, v1.models, costs")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
