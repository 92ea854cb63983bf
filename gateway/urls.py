from django.contrib import admin
from django.urls import path

from gateway.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", api.urls),
]

handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
