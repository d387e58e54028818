"""The pages for "not found" and "server error", and the site's icon, through real HTTP requests.

A missing page gets the app's look and a way home (the API's paths keep their JSON); the 500 page
renders with no request, no static files and no database, since anything could be what failed;
/favicon.ico, which browsers ask for on their own, leads to the SVG icon every page links.
"""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory

pytestmark = pytest.mark.django_db

ICON_LINK = '<link rel="icon" href="/static/ragsite/favicon.svg" type="image/svg+xml">'


@pytest.mark.parametrize("path", ["/documents/99999/", "/no/such/page/"])
def test_a_missing_page_has_the_apps_look_and_a_link_home(staff_client, path):
    response = staff_client.get(path)
    html = response.content.decode()
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "/static/search/app.css" in html and '<a class="brand" href="/">ragsite</a>' in html
    assert "<h1>Page not found</h1>" in html and f"<code>{path}</code>" in html
    assert '<a href="/" id="home-link">Go to the search page</a>' in html
    assert ICON_LINK in html


def test_a_missing_page_reads_nothing_from_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert client.get("/no/such/page/").status_code == 404


def test_a_missing_api_path_is_still_json(staff_client):
    response = staff_client.get("/api/no-such-thing/")
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")


def test_the_server_error_page_renders_without_a_request_static_files_or_the_database(django_assert_num_queries):
    from django.views.defaults import server_error

    with django_assert_num_queries(0):
        response = server_error(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "<h1>Something went wrong</h1>" in html and '<a href="/">Go to the search page</a>' in html
    assert "/static/" not in html and "Traceback" not in html


def test_favicon_ico_redirects_to_the_svg_icon_and_may_be_cached(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/ragsite/favicon.svg"
    assert "max-age=604800" in response["Cache-Control"]
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content)


def test_every_page_links_the_icon(staff_client):
    from documents.models import Source
    from documents.services import document_ingest

    document = document_ingest(source=Source.objects.create(name="notes"), title="Tides", text="High water.").document
    for path in ("/", f"/documents/{document.pk}/", "/admin/", "/admin/documents/source/"):
        assert ICON_LINK in staff_client.get(path).content.decode(), path
    for path in ("/login/", "/admin/login/"):
        assert ICON_LINK in Client().get(path).content.decode(), path
