"""Container health check for the api service: GET /health on the local gunicorn.

The image has no curl, and /health must be asked for under a host name that Django accepts:
the first entry of ALLOWED_HOSTS (a leading-dot pattern such as `.example.com` becomes
`example.com`), so the probe does not fail on DisallowedHost in production. It asks as if over
HTTPS (X-Forwarded-Proto), as the reverse proxy would, so SECURE_SSL_REDIRECT cannot turn the
answer into a redirect. Exit status 0 = healthy, 1 = not.
"""

from __future__ import annotations

import http.client
import json
import os
import sys


def probe_host() -> str:
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0] if hosts else "localhost"
    if host == "*":
        return "localhost"
    return host.lstrip(".")


def main() -> int:
    bind = os.environ.get("GUNICORN_BIND", "")
    port = int(bind.rsplit(":", 1)[1]) if ":" in bind else int(os.environ.get("PORT", "8000"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "4")))
    try:
        conn.request("GET", "/health", headers={"Host": probe_host(), "X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        print(f"healthcheck: no answer on port {port}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if response.status != 200:
        print(f"healthcheck: /health answered {response.status}: {body[:200]!r}", file=sys.stderr)
        return 1
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        status = None
    if status != "ok":
        print(f"healthcheck: unexpected /health body {body[:200]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
