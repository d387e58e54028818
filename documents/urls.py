from rest_framework.routers import DefaultRouter

from documents import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("sources", api.SourceViewSet, basename="source")
router.register("documents", api.DocumentViewSet, basename="document")
router.register("chunks", api.ChunkViewSet, basename="chunk")

urlpatterns = router.urls
