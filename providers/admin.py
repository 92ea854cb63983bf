from django import forms
from django.contrib import admin

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
