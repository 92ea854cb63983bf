"""Every dashboard page. Each area keeps its URL namespace (dashboard, personas,
providers, budgets), which the templates name in {% url %}."""

from django.urls import include, path

from dashboard import budgets, costs, documents, personas, playground, providers, tools, views

overview_patterns = [
    path("", views.overview, name="overview"),
    path("keys/", views.keys, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("teams/", views.team_create, name="team_create"),
    path("teams/members/", views.membership_set, name="membership_set"),
    path("people/invite/", views.user_invite, name="user_invite"),
    path("people/<int:user_id>/reinvite/", views.user_reinvite, name="user_reinvite"),
    path("audit/", views.audit, name="audit"),
]

persona_patterns = [
    path("", personas.persona_list, name="list"),
    path("new/", personas.persona_create, name="create"),
    path("export/", personas.map_export, name="export"),
    path("import/", personas.map_import, name="import"),
    path("<slug:slug>/", personas.persona_edit, name="edit"),
    path("<slug:slug>/steps/", personas.step_add, name="step_add"),
    path("<slug:slug>/steps/<int:step_id>/", personas.step_update, name="step_update"),
    path("<slug:slug>/steps/<int:step_id>/move/<str:direction>/", personas.step_move, name="step_move"),
    path("<slug:slug>/steps/<int:step_id>/remove/", personas.step_remove, name="step_remove"),
    path("<slug:slug>/playground/", playground.playground, name="playground"),
]

provider_patterns = [
    path("", providers.provider_list, name="list"),
    path("new/", providers.provider_create, name="create"),
    path("<slug:name>/", providers.provider_edit, name="edit"),
    path("<slug:name>/models/", providers.model_add, name="model_add"),
    path("<slug:name>/models/<int:model_id>/delete/", providers.model_delete, name="model_delete"),
    path("<slug:name>/models/<int:model_id>/", providers.model_edit, name="model_edit"),
    path("<slug:name>/catalog/refresh/", providers.catalog_refresh, name="catalog_refresh"),
    path("<slug:name>/test/", providers.provider_test, name="test"),
]

budget_patterns = [
    path("budgets/", budgets.budget_list, name="list"),
    path("budgets/new/", budgets.budget_create, name="create"),
    path("budgets/<int:budget_id>/", budgets.budget_edit, name="edit"),
    path("alerts/<int:alert_id>/acknowledge/", budgets.alert_acknowledge, name="alert_ack"),
    path("costs/", costs.costs, name="costs"),
    path("usage/", costs.usage_list, name="usage"),
    path("usage/<int:usage_id>/", costs.usage_detail, name="usage_detail"),
    path("runs/<path:run_id>/", costs.run_detail, name="run"),
]

tool_patterns = [
    path("", tools.server_list, name="list"),
    path("new/", tools.server_create, name="server_create"),
    path("grants/", tools.grants, name="grants"),
    path("calls/", tools.tool_calls, name="calls"),
    path("personas/<slug:slug>/", tools.persona_tools, name="persona"),
    path("<slug:name>/", tools.server_edit, name="server"),
    path("<slug:name>/refresh/", tools.server_refresh, name="server_refresh"),
    path("<slug:name>/tools/<int:tool_id>/approve/", tools.tool_approve, name="tool_approve"),
    path("<slug:name>/tools/<int:tool_id>/", tools.tool_settings, name="tool_settings"),
]

document_patterns = [
    path("", documents.document_list, name="list"),
    path("<int:document_id>/delete/", documents.document_delete, name="delete"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout, name="logout"),
    path("login/set-password/<uidb64>/<token>/", views.SetPasswordView.as_view(), name="set_password"),
    path("dashboard/", include((overview_patterns, "dashboard"))),
    path("dashboard/personas/", include((persona_patterns, "personas"))),
    path("dashboard/providers/", include((provider_patterns, "providers"))),
    path("dashboard/", include((budget_patterns, "budgets"))),
    path("dashboard/tools/", include((tool_patterns, "tools"))),
    path("dashboard/documents/", include((document_patterns, "documents"))),
]
