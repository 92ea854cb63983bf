from django.contrib import admin

from personas.models import Persona, RouteStep


class RouteStepInline(admin.TabularInline):
    model = RouteStep
    extra = 0
    fields = ("position", "provider", "model", "params", "weight", "fallback_on_client_error")


@admin.register(Persona)
class PersonaAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "enabled", "updated_at")
    search_fields = ("slug", "name")
    inlines = [RouteStepInline]
