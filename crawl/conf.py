"""Crawl settings with their defaults in one place.

The crawl library is also usable without configured Django settings (scripts, benches), so
every read falls back to the default when settings are missing or not configured.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "CRAWL_ALLOW_PRIVATE_ADDRESSES": False,
    "CRAWL_USER_AGENT": "ragsite-crawler/1.0 (+https://github.com/ragsite)",
    "CRAWL_DEFAULT_DELAY": 0.5,
    "CRAWL_TIMEOUT": 15.0,
    "CRAWL_MAX_PAGE_BYTES": 10 * 1024 * 1024,
    "CRAWL_MAX_REDIRECTS": 5,
    "CRAWL_CONCURRENCY": 4,
    # Query parameters dropped from canonical URLs; shell-style globs on the parameter name.
    "CRAWL_TRACKING_PARAMS": [
        "utm_*", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "fbclid", "msclkid", "twclid",
        "ttclid", "li_fat_id", "yclid", "igshid", "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc",
        "_hsmi", "mkt_tok", "vero_id", "oly_anon_id", "oly_enc_id", "rb_clickid", "s_cid",
    ],
    # A robots.txt is trusted this long (RFC 9309 asks for at most 24 hours).
    "CRAWL_ROBOTS_CACHE_SECONDS": 24 * 3600,
    # After a 5xx / network error on robots.txt the host counts as disallowed this long.
    "CRAWL_ROBOTS_ERROR_SECONDS": 600,
    # Crawl-delay values above this are capped so one robots.txt cannot stall a job for hours.
    "CRAWL_MAX_CRAWL_DELAY": 60.0,
    "CRAWL_MAX_SITEMAPS": 20,
    "CRAWL_MAX_SITEMAP_URLS": 50_000,
    # The sitemap protocol caps a sitemap at 50 MB uncompressed.
    "CRAWL_MAX_SITEMAP_BYTES": 50 * 1024 * 1024,
    # Skip links marked rel="nofollow" (a page-wide <meta name="robots" content="nofollow"> is
    # always obeyed).
    "CRAWL_RESPECT_NOFOLLOW": True,
    # A job whose heartbeat is older than this is considered abandoned and may be re-claimed.
    "CRAWL_STALE_SECONDS": 300,
}


def crawl_setting(name: str) -> Any:
    try:
        return getattr(settings, name, DEFAULTS[name])
    except ImproperlyConfigured:
        return DEFAULTS[name]
