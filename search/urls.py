from django.urls import path

from search import api

urlpatterns = [
    path("api/search/", api.SearchView.as_view(), name="api-search"),
]
