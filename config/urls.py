"""The project's URLs: the admin, the dashboard's pages, the API, static files."""

from django.contrib import admin
from django.urls import include, path, re_path

from api import errors
from api.urls import api
from dashboard.rendering import static_file

urlpatterns = [
    path("admin/", admin.site.urls),
    # The dashboard (before the API's catch-all patterns).
    path("", include("dashboard.urls")),
    path("static/<path:path>", static_file),
    path("", api.urls),
    # Unknown API paths answer with the JSON envelope even when DEBUG is on.
    re_path(r"^(v1|api)/", errors.not_found),
]

handler404 = "api.errors.not_found"
handler500 = "api.errors.server_error"
