"""/api/docs in Chromium: Swagger UI from this site's static files (django-ninja
ships them), under the page CSP, with no CDN and no console error."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import WIDTHS, at_width, screenshot

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", WIDTHS)
def test_the_api_docs_render_from_this_sites_static_files(page, live, width):
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    at_width(page, width)
    response = page.goto("/api/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Execution Platform")
    expect(page.locator(".opblock-summary-path", has_text="/v1/chat/completions").first).to_be_visible()
    assert hosts == {live.url.split("/")[2]}  # nothing from a CDN
    screenshot(page, f"api-docs-{width}")
