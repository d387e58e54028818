"""The admin's login form stops password guessing (django-axes): after LOGIN_FAILURE_LIMIT
failures for one username from one address, that pair gets a clear 429 page for
LOGIN_COOLOFF_MINUTES, even with the right password; others are not locked out by it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin_user(django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 3
    return django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def browser():
    """A client that enforces CSRF like a browser session does: the form's token must be sent."""
    return Client(enforce_csrf_checks=True)


def sign_in(browser: Client, username: str, password: str, **meta):
    form = browser.get("/admin/login/?next=/admin/", **meta)
    assert form.status_code == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content).group(1).decode()
    return browser.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"},
        **meta,
    )


def assert_locked_out(response):
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert b"Too many failed sign-ins" in response.content
    assert b"manage.py axes_reset" in response.content  # how an administrator lifts it
    assert int(response["Retry-After"]) == 15 * 60


def test_the_right_password_signs_in(browser, admin_user):
    response = sign_in(browser, "admin", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_login_form_locks_a_username_out_after_the_failure_limit(browser, admin_user):
    for _ in range(2):
        wrong = sign_in(browser, "admin", "guess")
        assert wrong.status_code == 200 and b"Please enter the correct username and password" in wrong.content
    assert_locked_out(sign_in(browser, "admin", "guess"))
    # locked: the right password does not help, so a guesser cannot tell when it found it
    assert_locked_out(sign_in(browser, "admin", PASSWORD))
    assert "_auth_user_id" not in browser.session


def test_a_lockout_does_not_lock_the_user_out_from_another_address(browser, admin_user):
    for _ in range(3):
        sign_in(browser, "admin", "guess", REMOTE_ADDR="203.0.113.9")
    assert_locked_out(sign_in(browser, "admin", PASSWORD, REMOTE_ADDR="203.0.113.9"))
    assert sign_in(Client(enforce_csrf_checks=True), "admin", PASSWORD, REMOTE_ADDR="198.51.100.4").status_code == 302


def test_signing_in_works_again_after_the_cool_off(browser, admin_user):
    for _ in range(3):
        sign_in(browser, "admin", "guess")
    assert_locked_out(sign_in(browser, "admin", PASSWORD))
    # the failures are rows with a time: age them past LOGIN_COOLOFF_MINUTES instead of waiting
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(browser, "admin", PASSWORD).status_code == 302


def test_a_spoofed_x_forwarded_for_does_not_escape_the_lockout(browser, admin_user):
    for n in range(3):
        sign_in(browser, "admin", "guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert_locked_out(sign_in(browser, "admin", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.200"))


def test_behind_a_trusted_proxy_the_forwarded_client_is_locked_out_not_the_proxy(browser, admin_user, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    for n in range(3):
        # the client may prepend what it likes; the proxy's own entry is the last one
        sign_in(browser, "admin", "guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 192.0.2.50", **proxy)
    assert_locked_out(sign_in(browser, "admin", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.50", **proxy))
    assert AccessAttempt.objects.get().ip_address == "192.0.2.50"
    other = sign_in(Client(enforce_csrf_checks=True), "admin", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.51", **proxy)
    assert other.status_code == 302
