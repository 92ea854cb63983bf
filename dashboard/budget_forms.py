"""Dashboard forms for budgets and the usage log's filters."""

from __future__ import annotations

from django import forms

from budgets.models import Budget, Usage


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
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
