from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from ragsite import health, metrics

FAVICON_MAX_AGE = 7 * 24 * 3600  # a week: the redirect is cached, not asked for on every page


def favicon(request):
    """/favicon.ico, which browsers (and the admin's pages before their <link>) ask for on their own:
    a redirect to the SVG icon in static files, cacheable, instead of a 404 and a log line each time."""
    from django.http import HttpResponsePermanentRedirect
    from django.templatetags.static import static
    from django.utils.cache import patch_cache_control

    response = HttpResponsePermanentRedirect(static("ragsite/favicon.svg"))
    patch_cache_control(response, public=True, max_age=FAVICON_MAX_AGE)
    return response


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("documents.urls")),
    path("api/", include("crawl.urls")),
    path("", include("search.urls")),
]

handler404 = "ragsite.urls.not_found"
handler500 = "ragsite.urls.server_error"


def not_found(request, exception=None):
    from django.views.defaults import page_not_found

    from ragsite.api import json_404

    if request.path.startswith("/api/"):
        return json_404(request, exception)
    return page_not_found(request, exception)


def server_error(request):
    from django.views.defaults import server_error as html_server_error

    from ragsite.api import json_500

    if request.path.startswith("/api/"):
        return json_500(request)
    return html_server_error(request)
