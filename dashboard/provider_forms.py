"""Dashboard forms for providers and their models. Credentials are write-only."""

from __future__ import annotations

from django import forms

from dashboard.persona_forms import ParamsField
from providers.models import Model, Provider


class ProviderForm(forms.ModelForm):
    # Never rendered back: the field is always empty; leaving it empty keeps
    # the stored credential.
    credential = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        label="API key", help_text="Write-only: leave empty to keep the stored key.",
    )
    clear_credential = forms.BooleanField(required=False, label="Remove the stored API key")
    options = ParamsField(label="Adapter options (JSON)")
    base_url = forms.URLField(required=False, assume_scheme="https", label="Base URL",
                              help_text="Empty means the provider's public API.")

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "enabled", "connect_timeout", "read_timeout", "options"]

    # Where a provider points and what it runs (options such as claude_agent's
    # cli_path) are for admins only: an operator who could aim the stored
    # credential and every prompt at any URL could exfiltrate both (docs/SECURITY.md).
    ADMIN_ONLY = ("base_url", "options")

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if user is None or not user.is_superuser:
            for name in self.ADMIN_ONLY:
                field = self.fields[name]
                field.disabled = True
                field.help_text = "Only an admin may change this."
                # A disabled field cleans its initial value: give it in the posted (text) form.
                self.initial[name] = field.prepare_value(self.initial.get(name, field.initial))


class ModelForm(forms.ModelForm):
    class Meta:
        model = Model
        fields = ["name", "input_price", "output_price", "cached_input_price", "context_window",
                  "max_output_tokens", "enabled"]
        labels = {"input_price": "Input $/M tokens", "output_price": "Output $/M tokens",
                  "cached_input_price": "Cached input $/M tokens"}

    def __init__(self, *args, provider: Provider, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instance.provider = provider

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = Model.objects.filter(provider=self.instance.provider, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f"{self.instance.provider.name} already has a model '{name}'.")
        return name
