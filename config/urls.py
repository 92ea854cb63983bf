from django.contrib import admin
from django.urls import include, path, re_path

from api import views
from dashboard import views as views_dashboard
from api.urls import api
from dashboard.rendering import static_file

urlpatterns = [
    path("admin/", admin.site.urls),
    # The dashboard (before the API's catch-all patterns).
    path("", views_dashboard.home, name="home"),
    path("login/", views_dashboard.LoginView.as_view(), name="login"),
    path("logout/", views_dashboard.logout, name="logout"),
    path("dashboard/", include("dashboard.urls")),
    path("dashboard/personas/", include("dashboard.persona_urls")),
    path("dashboard/providers/", include("dashboard.provider_urls")),
    path("dashboard/", include("dashboard.budget_urls")),
    path("static/<path:path>", static_file),
    path("", api.urls),
    # Unknown API paths answer with the JSON envelope even when DEBUG is on.
    re_path(r"^(v1|api)/", views.not_found),
]

handler404 = "api.views.not_found"
handler500 = "api.views.server_error"
