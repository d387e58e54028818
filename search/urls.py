from django.urls import path

from search import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("api/search/", api.SearchView.as_view(), name="api-search"),
    path("api/ask/", api.AskView.as_view(), name="api-ask"),
]
