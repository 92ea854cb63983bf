"""The overview's live feed keeps itself fresh in a real browser: over the
events websocket for those who see every team, by polling for team leads and
for anyone whose socket drops; with the page's CSP (no eval) and no error in
the console (tests/dashboard/conftest.py fails a test on any)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot
from tests.dashboard.test_browser import ask

pytestmark = pytest.mark.browser
POLL_WAIT_MS = 15_000  # the page polls every 5 s; generous for a busy 2-core machine


@pytest.mark.parametrize("width", WIDTHS)
def test_a_team_leads_overview_refreshes_by_polling_without_a_websocket(page, live, world, people, width):
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    at_width(page, width)
    log_in(page, "rita")
    feed = page.locator("#live-feed")
    expect(page.locator("#live-state")).to_have_text("Refreshing every 5 seconds.")
    expect(feed).to_have_attribute("data-live", "polling")
    page.evaluate("window.notReloaded = true")
    request_id = ask(live, world.red_key, persona="developer").headers["X-Request-ID"]
    row = feed.locator(f"tr[data-request-id='{request_id}']")
    expect(row).to_contain_text("developer", timeout=POLL_WAIT_MS)
    assert page.evaluate("window.notReloaded") is True  # the fragment, not a page load
    assert sockets == []  # the events socket carries every team's events: not for a lead
    screenshot(page, f"overview-team-lead-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_overview_polls_while_its_websocket_is_down(page, live, world, people, width):
    sockets = {"up": True, "open": []}

    def route(socket) -> None:
        if not sockets["up"]:
            socket.close()  # the page sees a connection that failed to open
            return
        socket.connect_to_server()
        sockets["open"].append(socket)

    page.route_web_socket("**/ws/v1/events", route)
    at_width(page, width)
    log_in(page, "olive")
    feed, state = page.locator("#live-feed"), page.locator("#live-state")
    expect(feed).to_have_attribute("data-live", "ws")
    sockets["up"] = False
    sockets["open"][0].close()
    expect(state).to_have_text("Live updates paused; refreshing every 5 seconds.")
    expect(feed).to_have_attribute("data-live", "polling")
    request_id = ask(live, world.red_key, persona="reviewer").headers["X-Request-ID"]
    expect(feed.locator(f"tr[data-request-id='{request_id}']")).to_contain_text("reviewer", timeout=POLL_WAIT_MS)
    expect(feed).to_have_attribute("data-live", "polling")  # still down: the row came by polling
    assert len(sockets["open"]) == 1
