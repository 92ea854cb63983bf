from django.contrib import admin

from budgets.models import Alert, Budget, Usage


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "period", "limit_usd", "hard", "enabled")
    list_filter = ("scope", "period", "hard")


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "request_id", "team", "persona", "provider", "model", "status", "cost_usd")
    list_filter = ("status", "provider", "persona")
    search_fields = ("request_id", "run_id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the ledger is append-only


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "budget", "threshold", "message", "acknowledged_at")
