from django.urls import path, re_path

from search import api, conversations_api, document_view, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.SignInView.as_view(), name="login"),
    path("logout/", views.SignOutView.as_view(), name="logout"),
    re_path(r"^documents/(?P<pk>[^/]+)/$", document_view.document_view, name="document-view"),
    path("api/search/", api.SearchView.as_view(), name="api-search"),
    path("api/ask/", api.AskView.as_view(), name="api-ask"),
    path("api/conversations/", conversations_api.ConversationListView.as_view(), name="api-conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        conversations_api.ConversationDetailView.as_view(),
        name="api-conversation",
    ),
]
