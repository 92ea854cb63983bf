from django.contrib import admin
from django.urls import include, path, re_path

from gateway import views, views_dashboard
from gateway.api import api
from gateway.dashboard import static_file

urlpatterns = [
    path("admin/", admin.site.urls),
    # The dashboard (before the API's catch-all patterns).
    path("", views_dashboard.home, name="home"),
    path("login/", views_dashboard.LoginView.as_view(), name="login"),
    path("logout/", views_dashboard.logout, name="logout"),
    path("dashboard/", include("gateway.urls_dashboard")),
    path("dashboard/personas/", include("personas.urls")),
    path("dashboard/providers/", include("providers.urls")),
    path("dashboard/", include("budgets.urls")),
    path("static/<path:path>", static_file),
    path("", api.urls),
    # Unknown API paths answer with the JSON envelope even when DEBUG is on.
    re_path(r"^(v1|api)/", views.not_found),
]

handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
