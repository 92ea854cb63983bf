from django.contrib import admin
from django.urls import path, re_path

from gateway import views
from gateway.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", api.urls),
    # Unknown API paths answer with the JSON envelope even when DEBUG is on.
    re_path(r"^(v1|api)/", views.not_found),
]

handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
