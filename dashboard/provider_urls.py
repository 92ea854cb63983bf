from django.urls import path

from dashboard import providers as views

app_name = "providers"
urlpatterns = [
    path("", views.provider_list, name="list"),
    path("new/", views.provider_create, name="create"),
    path("<slug:name>/", views.provider_edit, name="edit"),
    path("<slug:name>/models/", views.model_add, name="model_add"),
    path("<slug:name>/models/<int:model_id>/delete/", views.model_delete, name="model_delete"),
    path("<slug:name>/test/", views.provider_test, name="test"),
]
