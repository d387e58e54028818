from django.urls import path

from search import api, conversations_api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("api/search/", api.SearchView.as_view(), name="api-search"),
    path("api/ask/", api.AskView.as_view(), name="api-ask"),
    path("api/conversations/", conversations_api.ConversationListView.as_view(), name="api-conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        conversations_api.ConversationDetailView.as_view(),
        name="api-conversation",
    ),
]
