from django.contrib import admin

from accounts.models import ApiKey, Team


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("name", "prefix", "scopes", "expires_at", "revoked_at")
    readonly_fields = ("prefix",)
    extra = 0
    can_delete = False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "prefix", "scopes", "expires_at", "revoked_at")
    list_filter = ("team",)
    readonly_fields = ("prefix", "created_at")
    exclude = ("key_hash",)

    def has_add_permission(self, request) -> bool:
        # Keys are issued by `create_api_key` or the dashboard, which show the
        # raw key once; the admin form could not.
        return False
