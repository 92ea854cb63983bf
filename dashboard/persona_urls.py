from django.urls import path

from dashboard import playground, personas as views

app_name = "personas"
urlpatterns = [
    path("", views.persona_list, name="list"),
    path("new/", views.persona_create, name="create"),
    path("export/", views.map_export, name="export"),
    path("import/", views.map_import, name="import"),
    path("<slug:slug>/", views.persona_edit, name="edit"),
    path("<slug:slug>/steps/", views.step_add, name="step_add"),
    path("<slug:slug>/steps/<int:step_id>/", views.step_update, name="step_update"),
    path("<slug:slug>/steps/<int:step_id>/move/<str:direction>/", views.step_move, name="step_move"),
    path("<slug:slug>/steps/<int:step_id>/remove/", views.step_remove, name="step_remove"),
    path("<slug:slug>/playground/", playground.playground, name="playground"),
]
