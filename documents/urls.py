from django.urls import re_path
from rest_framework.routers import DefaultRouter

from documents import api, files_api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("sources", api.SourceViewSet, basename="source")
router.register("documents", api.DocumentViewSet, basename="document")
router.register("chunks", api.ChunkViewSet, basename="chunk")

urlpatterns = [
    re_path(r"^documents/(?P<pk>[^/.]+)/file/?$", files_api.DocumentFileView.as_view(), name="document-file"),
    re_path(
        r"^documents/(?P<pk>[^/.]+)/progress/?$", files_api.DocumentProgressView.as_view(), name="document-progress"
    ),
    *router.urls,
]
