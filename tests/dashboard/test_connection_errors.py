"""Test connection says what really failed: a host that does not resolve is a
DNS failure, a closed port a refused connection, never "timeout" (the aiohttp
transport under the OpenAI SDK reports both as a connect timeout)."""

from __future__ import annotations

import socket

import pytest
from playwright.sync_api import expect

from providers.models import Provider
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot

pytestmark = pytest.mark.browser
# glibc refuses this name itself (a label may not start with "-"): a real
# getaddrinfo failure that sends no packet to a DNS server.
UNRESOLVABLE = "-no-such-host-.example"


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def openai_provider(world) -> Provider:
    provider = Provider(name="openai", kind="openai", connect_timeout=5)
    provider.set_credential("sk-test-connection")
    provider.save()
    return provider


def point_at(provider: Provider, base_url: str) -> None:
    # Past the save-time check (providers/validation.py refuses a host that does
    # not resolve): as when a DNS record disappears after the provider was saved.
    Provider.objects.filter(pk=provider.pk).update(base_url=base_url)


@pytest.mark.parametrize("width", WIDTHS)
def test_test_connection_names_a_dns_failure_and_a_refused_connection(page, live, people, openai_provider, width):
    at_width(page, width)
    log_in(page, "olive")
    result = page.locator("#test-result")

    point_at(openai_provider, f"http://{UNRESOLVABLE}/v1")
    page.goto("/dashboard/providers/openai/")
    page.get_by_role("button", name="Test connection").click()
    expect(result).to_contain_text(f"Failed (unavailable) calling gpt-4o-mini at {UNRESOLVABLE}")
    expect(result).to_contain_text("DNS lookup failed: the host does not resolve")
    expect(result).not_to_contain_text("timed out")
    screenshot(page, f"provider-test-dns-{width}")

    point_at(openai_provider, f"http://127.0.0.1:{closed_port()}/v1")
    page.reload()
    page.get_by_role("button", name="Test connection").click()
    expect(result).to_contain_text("connection refused: nothing listens at that address and port")
    expect(result).not_to_contain_text("timed out")
