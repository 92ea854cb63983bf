from django.urls import path

from dashboard import views as views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("keys/", views.keys, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("teams/", views.team_create, name="team_create"),
    path("teams/members/", views.membership_set, name="membership_set"),
    path("audit/", views.audit, name="audit"),
]
