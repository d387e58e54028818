"""The web app's own sign-in page (/login/) and sign-out (/logout/), through real HTTP requests.

Anonymous visitors to any page that needs an account land on it (not on the Django admin's
login); it signs in through django-axes like the admin does, so guessing passwords locks the
username and address out; a ``next`` that leaves the site is ignored; sign-out is a POST.
"""

from __future__ import annotations

import io
import re

import pytest
from django.test import Client

from documents.models import Source
from documents.services import document_ingest

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def reader(django_user_model, settings):
    settings.SEARCH_PUBLIC = False
    settings.AXES_FAILURE_LIMIT = 3
    return django_user_model.objects.create_user("reader", "reader@example.com", PASSWORD)


@pytest.fixture
def browser():
    """A client that enforces CSRF like a browser session does: the form's token must be sent."""
    return Client(enforce_csrf_checks=True)


def csrf_token(html: bytes) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1).decode()


def sign_in(browser: Client, username: str, password: str, next_url: str = "/", **meta):
    form = browser.get("/login/", {"next": next_url}, **meta)
    assert form.status_code == 200
    return browser.post(
        "/login/",
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf_token(form.content), "next": next_url},
        **meta,
    )


def test_anonymous_visitors_get_the_apps_sign_in_page_not_the_admins(browser, reader):
    response = browser.get("/", {"q": "bees"})
    assert response.status_code == 302 and response["Location"] == "/login/?next=/%3Fq%3Dbees"

    page = browser.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    assert "Django administration" not in html and "/static/admin/" not in html
    assert "search/app.css" in html and '<a class="brand"' in html  # the search page's header and styles
    assert '<h1 id="sign-in-heading">Sign in</h1>' in html
    assert "answers questions from them" in html  # what the service is
    assert "ask them for a username and password" in html and "manage.py createsuperuser" in html  # how to get in
    assert 'name="next" value="/?q=bees"' in html
    assert 'id="sign-in-link"' not in html  # no "Sign in" link on the sign-in page itself


def test_signing_in_goes_back_to_next_and_the_header_shows_who_is_signed_in(browser, reader):
    response = sign_in(browser, "reader", PASSWORD, next_url="/?q=bees")
    assert response.status_code == 302 and response["Location"] == "/?q=bees"
    page = browser.get("/").content.decode()
    assert '<span class="who" id="signed-in-as" title="Signed in">reader</span>' in page
    assert 'action="/logout/"' in page and 'id="sign-out"' in page
    assert 'id="admin-link"' not in page  # not staff
    # Signed in, the sign-in page sends the user on instead of asking again.
    assert browser.get("/login/").status_code == 302


def test_staff_see_a_link_to_the_admin(browser, django_user_model, settings):
    settings.SEARCH_PUBLIC = False
    django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)
    assert sign_in(browser, "admin", PASSWORD).status_code == 302
    page = browser.get("/").content.decode()
    assert '<a href="/admin/" id="admin-link">Admin</a>' in page


@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/steal", "//evil.example/", "http://testserver.evil.example/", "javascript:alert(1)"],
)
def test_a_next_that_leaves_the_site_is_ignored(browser, reader, next_url):
    response = sign_in(browser, "reader", PASSWORD, next_url=next_url)
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_wrong_password_shows_the_form_again_with_the_reason(browser, reader):
    response = sign_in(browser, "reader", "guess")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Please enter a correct username and password" in html and 'id="sign-in-errors"' in html
    assert 'value="reader"' in html  # the username is kept
    assert "_auth_user_id" not in browser.session


def test_the_sign_in_page_needs_the_csrf_token(browser, reader):
    response = browser.post("/login/", {"username": "reader", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in browser.session


def test_guessing_locks_the_username_out_on_this_page_with_a_page_of_the_app(browser, reader):
    for _ in range(2):
        assert sign_in(browser, "reader", "guess").status_code == 200
    for password in ("guess", PASSWORD):  # locked: the right password does not help either
        response = sign_in(browser, "reader", password)
        html = response.content.decode()
        assert response.status_code == 429, html
        assert response["Content-Type"].startswith("text/html")
        assert int(response["Retry-After"]) == 15 * 60
        assert "Too many failed sign-ins for this account from your address" in html
        assert "search/app.css" in html and 'id="sign-in-heading"' in html  # the app's page, not a bare one
        assert "Traceback" not in html and "Please enter a correct" not in html
    assert "_auth_user_id" not in browser.session
    # The lockout is the one the admin's login counts too: same username, same address.
    admin_form = browser.get("/admin/login/")
    locked = browser.post(
        "/admin/login/",
        {"username": "reader", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(admin_form.content)},
    )
    assert locked.status_code == 429
    # Another address is not locked out by it.
    assert sign_in(Client(enforce_csrf_checks=True), "reader", PASSWORD, REMOTE_ADDR="198.51.100.4").status_code == 302


def test_the_lockout_page_says_how_an_administrator_lifts_it_and_that_works(browser, reader):
    from django.core.management import call_command

    for _ in range(3):
        sign_in(browser, "reader", "guess")
    html = sign_in(browser, "reader", PASSWORD).content.decode()
    assert "An administrator can lift the block at once with <code>manage.py axes_reset</code>." in html
    call_command("axes_reset", stdout=io.StringIO())
    assert sign_in(browser, "reader", PASSWORD).status_code == 302


def test_signing_out_is_a_post_with_the_token_and_ends_on_the_sign_in_page(browser, reader):
    assert sign_in(browser, "reader", PASSWORD).status_code == 302
    assert browser.get("/logout/").status_code == 405  # a link or an image cannot sign anyone out
    assert browser.post("/logout/").status_code == 403  # nor a form from another site (no token)
    assert "_auth_user_id" in browser.session

    token = csrf_token(browser.get("/").content)
    response = browser.post("/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert "_auth_user_id" not in browser.session
    assert "You are signed out." in browser.get("/login/").content.decode()
    assert browser.get("/")["Location"] == "/login/?next=/"


def test_the_document_view_sends_anonymous_visitors_to_the_sign_in_page(browser, reader):
    document = document_ingest(
        source=Source.objects.create(name="notes"), title="Bees", text="Bees make honey."
    ).document
    url = f"/documents/{document.pk}/"
    response = browser.get(url)
    assert response.status_code == 302 and response["Location"] == f"/login/?next=/documents/{document.pk}/"
    assert sign_in(browser, "reader", PASSWORD, next_url=url)["Location"] == url
    page = browser.get(url).content.decode()
    assert "Bees make honey." in page and 'id="sign-out"' in page


def test_public_search_offers_sign_in_and_the_page_links_back(browser, reader, settings):
    settings.SEARCH_PUBLIC = True
    home = browser.get("/").content.decode()
    assert '<a href="/login/?next=/" id="sign-in-link">Sign in</a>' in home
    assert "Search without signing in" in browser.get("/login/").content.decode()
