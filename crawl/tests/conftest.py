from __future__ import annotations

import pytest

from crawl.tests.site import SiteServer, start_site


@pytest.fixture
def site(tmp_path) -> SiteServer:
    """The generated test site on a fresh 127.0.0.1 port (see crawl/tests/site.py)."""
    server = start_site(tmp_path / "site")
    yield server
    server.stop()
