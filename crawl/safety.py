"""Refuse to crawl into private networks (server-side request forgery).

The guard itself lives in ``ragsite.outbound``, shared with ``manage.py ingest URL``; see its
docstring for the two checks (before a request, and at connect time against DNS rebinding),
both governed by ``CRAWL_ALLOW_PRIVATE_ADDRESSES``. The crawler imports it from here.
"""

from __future__ import annotations

from ragsite.outbound import (
    GuardedNetworkBackend,
    IPAddress,
    Resolver,
    UnsafeURL,
    address_refusal,
    allow_private_default,
    check_url_safety,
    resolve_host,
    vet_host,
)

__all__ = [
    "GuardedNetworkBackend",
    "IPAddress",
    "Resolver",
    "UnsafeURL",
    "address_refusal",
    "allow_private_default",
    "check_url_safety",
    "resolve_host",
    "vet_host",
]
