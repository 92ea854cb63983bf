"""The project's URLs: the admin, the dashboard's pages, the API, static files."""

import re

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from api import errors
from api.paths import API_PATHS, UNPREFIXED_SDK_PATHS
from api.urls import api
from dashboard.rendering import static_file

# Every path under the API's prefixes, and the SDK paths a base URL without /v1
# produces: an unknown one answers with the JSON envelope, with DEBUG on too
# (Django's debug 404 page would list every URL pattern). No CSRF check: API
# clients send none, and the answer is a 404 either way.
API_CATCH_ALL = "^(" + "|".join(re.escape(p.lstrip("/")) for p in API_PATHS + UNPREFIXED_SDK_PATHS) + ")"

urlpatterns = [
    path("admin/", admin.site.urls),
    # The dashboard (before the API's catch-all patterns).
    path("", include("dashboard.urls")),
    path("static/<path:path>", static_file),
    path("", api.urls),
    re_path(API_CATCH_ALL, csrf_exempt(errors.not_found)),
]

handler404 = "api.errors.not_found"
handler500 = "api.errors.server_error"
