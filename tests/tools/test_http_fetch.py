"""http_fetch: GET only, text only, capped, and SSRF-guarded on every redirect hop."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.models import Team
from tools.catalog import builtin_server

from .builtin_support import call, granted_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

PAGES = {
    "/text": (200, "text/plain; charset=utf-8", b"hello from the page"),
    "/big": (200, "text/html", b"x" * 5000),
    "/image": (200, "image/png", b"\x89PNG...."),
    "/missing": (404, "text/plain", b"no such page"),
}
REDIRECTS = {
    "/to-text": "/text",
    "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    "/to-file": "file:///etc/passwd",
    "/loop": "/loop",
}
DRIP_SECONDS = 3


class Pages(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server name
        self.server.seen.append(self.path)
        if self.path == "/drip":  # headers at once, then a byte now and then: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(DRIP_SECONDS * 10):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.1)
            return
        if self.path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[self.path])
            self.end_headers()
            return
        status, content_type, body = PAGES[self.path]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def team(transactional_db):
    return Team.objects.create(name="red")


async def fetch(team, url: str, **extra):
    return await call(await granted_key(team), "http_fetch", {"url": url, **extra})


async def test_it_reads_text_and_follows_a_redirect_it_checked(site, team):
    _, base = site
    result = await fetch(team, base + "/to-text")
    assert not result.is_error and result.content.endswith("hello from the page")
    assert result.structured["url"] == base + "/text" and result.structured["status"] == 200


async def test_a_redirect_to_the_metadata_service_is_refused_before_it_is_followed(site, team):
    _, base = site
    result = await fetch(team, base + "/to-metadata")
    assert result.error_code == "url_refused" and "169.254.169.254" in result.content
    file = await fetch(team, base + "/to-file")
    assert file.error_code == "url_refused" and "http://" in file.content


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
                                 "ftp://127.0.0.1/", "http://user:pw@127.0.0.1/"])
async def test_forbidden_urls_are_refused(team, url):
    result = await fetch(team, url)
    assert result.error_code == "url_refused", result.content


async def test_private_addresses_follow_the_provider_rule(site, team, settings):
    _, base = site
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = False
    result = await fetch(team, base + "/text")
    assert result.error_code == "url_refused" and "EP_ALLOW_PRIVATE_PROVIDER_URLS" in result.content


async def test_only_text_is_read_and_only_up_to_the_cap(site, team):
    _, base = site
    assert (await fetch(team, base + "/image")).error_code == "not_text"
    big = await fetch(team, base + "/big", max_bytes=100)
    assert big.structured["truncated"] is True and big.content.endswith("x" * 100) and "x" * 101 not in big.content


async def test_an_error_status_and_a_redirect_loop_are_tool_errors(site, team):
    _, base = site
    missing = await fetch(team, base + "/missing")
    assert missing.is_error and missing.error_code == "http_error" and "no such page" in missing.content
    loop = await fetch(team, base + "/loop")
    assert loop.error_code == "too_many_redirects"


async def test_the_whole_fetch_is_time_capped_even_when_every_read_is_quick(site, team):
    _, base = site
    key_holder = await fetch(team, base + "/text")  # creates the built-in server row
    assert not key_holder.is_error
    server = await builtin_server()
    server.options = {"http_fetch": {"timeout_seconds": 0.5}}
    await server.asave()
    started = time.monotonic()
    result = await fetch(team, base + "/drip")
    assert result.error_code == "tool_timeout" and "0.5 s" in result.content
    assert time.monotonic() - started < DRIP_SECONDS - 1
