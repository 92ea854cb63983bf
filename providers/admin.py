from django import forms
from django.contrib import admin

from providers.cloud import cloud_options_errors, credential_validate
from providers.models import Model, Provider


class ProviderForm(forms.ModelForm):
    # Write-only: the stored credential is never rendered back into the page.
    base_url = forms.URLField(required=False, assume_scheme="https")
    credential = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current credential.",
    )

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "enabled", "connect_timeout", "read_timeout", "options")

    def clean(self) -> dict:
        """The dashboard's checks for the cloud kinds (providers/cloud.py), here too:
        a service-account key's token_uri is an address the gateway will post to."""
        data = super().clean()
        kind, options = data.get("kind") or "", data.get("options") or {}
        for name, message in cloud_options_errors(kind=kind, base_url=data.get("base_url") or "",
                                                  options=options).items():
            self.add_error(name if name in self.fields else "options", message)
        if data.get("credential"):
            try:
                credential_validate(kind=kind, options=options, credential=data["credential"])
            except forms.ValidationError as error:
                self.add_error("credential", error)
        return data

    def save(self, commit: bool = True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("credential"):
            provider.set_credential(self.cleaned_data["credential"])
        if commit:
            provider.save()
        return provider


class ModelInline(admin.TabularInline):
    model = Model
    extra = 0


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "enabled", "has_credential")
    inlines = [ModelInline]

    @admin.display(boolean=True, description="credential set")
    def has_credential(self, obj: Provider) -> bool:
        return obj.has_credential
