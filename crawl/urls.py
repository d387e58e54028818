from rest_framework.routers import DefaultRouter

from crawl import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("crawl-jobs", api.CrawlJobViewSet, basename="crawl-job")

urlpatterns = router.urls
