"""Who the client is, what a locked-out login sees, and how key guessing is slowed.

One definition of the client's address serves django-axes (login lockouts) and DRF's throttles
(``NUM_PROXIES`` is set from the same ``TRUSTED_PROXY_COUNT``), so a proxy set-up that fools one
cannot fool the other.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape
from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle


def client_ip(request: HttpRequest) -> str:
    """The client's address: the TCP peer, or behind ``TRUSTED_PROXY_COUNT`` proxies the address
    the outermost of them put into X-Forwarded-For.

    Entries to the left of that one were written by the client and prove nothing. With fewer
    entries than proxies (a request that bypassed one), the leftmost entry is the best there is.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if count == 0 or not forwarded:
        return remote
    addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
    if not addresses:
        return remote
    return addresses[-min(count, len(addresses))]


def lockout_seconds() -> int:
    """How long a locked-out username and address wait after the last failure (LOGIN_COOLOFF_MINUTES)."""
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_message() -> str:
    minutes = max(1, math.ceil(lockout_seconds() / 60))
    return (
        f"Too many failed sign-ins for this account from your address. Signing in is blocked for "
        f"{minutes} minute{'s' if minutes != 1 else ''} after the last failed attempt; try again later."
    )


def login_lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer once a username has failed too often from one address: a 429 page
    that says why and for how long, with Retry-After (the default is a bare sentence).

    A sign-in view that already answered with its own lockout page (the web app's, marked
    ``is_lockout_page``) keeps it; the admin's login gets this one.
    """
    if original_response is not None and getattr(original_response, "is_lockout_page", False):
        return original_response
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in blocked</title></head>'
        f"<body><h1>Sign-in blocked</h1><p>{escape(lockout_message())}</p>"
        "<p>An administrator can lift the block at once with <code>manage.py axes_reset</code>.</p></body></html>"
    )
    response = HttpResponse(body, status=429, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(lockout_seconds())
    return response


class BadKeyThrottle(SimpleRateThrottle):
    """Counts requests with a key that is not valid, per client address (THROTTLE_BAD_KEY).

    Once over the rate, every key from that address gets 429 until the window passes, the
    valid ones too: answering a valid key normally would tell a guesser which guess was right.
    Valid keys are never counted, so a client that holds one is not slowed. Like the other
    throttles the history lives in Django's cache, which is per process: with N gunicorn
    workers a guesser gets at most N times the rate, against keys of 256 random bits.
    """

    scope = "bad_key"

    def get_cache_key(self, request, view=None):
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}

    def _load(self, request) -> None:
        self.key = self.get_cache_key(request)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]

    def check(self, request) -> None:
        self._load(request)
        if len(self.history) >= self.num_requests:
            raise exceptions.Throttled(
                self.wait(),
                detail="Too many requests with an invalid API key from this address.",
            )

    def record_failure(self, request) -> None:
        self._load(request)
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history[: self.num_requests], self.duration)
