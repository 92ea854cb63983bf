"""Dashboard forms: what an operator may type, checked before any write."""

from __future__ import annotations

import json

from django import forms

from personas.models import Persona
from providers.models import Provider

# Parameters a route step may set that the pipeline understands (the rest go
# to the adapter as extras); numbers are range-checked so a typo cannot reach
# a provider as a 400 in production.
NUMERIC_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "max_tokens": (1, 1_000_000)}


def parse_params(text: str) -> dict:
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(f"Parameters are not valid JSON: {error.msg} (line {error.lineno}).")
    if not isinstance(value, dict):
        raise forms.ValidationError('Parameters must be a JSON object, e.g. {"temperature": 0.2}.')
    for name, (low, high) in NUMERIC_RANGES.items():
        if name in value:
            number = value[name]
            if isinstance(number, bool) or not isinstance(number, int | float) or not low <= number <= high:
                raise forms.ValidationError(f"{name} must be a number from {low:g} to {high:g}.")
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
        fields = ["slug", "name", "description", "system_prompt", "default_params", "max_output_tokens", "enabled"]
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
