from django.urls import path

from dashboard import budgets as views, costs as views_costs

app_name = "budgets"
urlpatterns = [
    path("budgets/", views.budget_list, name="list"),
    path("budgets/new/", views.budget_create, name="create"),
    path("budgets/<int:budget_id>/", views.budget_edit, name="edit"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge, name="alert_ack"),
    path("costs/", views_costs.costs, name="costs"),
    path("usage/", views_costs.usage_list, name="usage"),
    path("usage/<int:usage_id>/", views_costs.usage_detail, name="usage_detail"),
]
