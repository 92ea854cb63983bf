"""SSRF: where a provider may point, who may point it there, and that a
provider's redirect never carries our credential (or the prompt) elsewhere."""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvicorn
from django.core.exceptions import ValidationError
from django.urls import reverse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from providers.adapters import adapter_class
from providers.adapters.base import AdapterConfig
from providers.models import Provider
from providers.types import ChatRequest, Message, ProviderError
from providers.validation import base_url_validate
from tests.dashboard.conftest import client_for
from tests.fakes.common import _free_port

REFUSED_ALWAYS = {
    "file scheme": "file:///etc/passwd",
    "ftp scheme": "ftp://127.0.0.1/",
    "gopher scheme": "gopher://127.0.0.1:6379/_INFO",
    "aws metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata as a decimal ip": "http://2852039166/",
    "aws metadata ipv6": "http://[fd00:ec2::254]/",
    "ipv4-mapped metadata": "http://[::ffff:169.254.169.254]/",
    "link-local ipv6": "http://[fe80::1]/",
    "alibaba metadata": "http://100.100.100.200/",
    "unspecified": "http://0.0.0.0:8000/",
    "credentials in the url": "https://user:secret@127.0.0.1/v1",
    "no host": "http:///v1",
}
PRIVATE = {
    "loopback": "http://127.0.0.1:11434/v1",
    "localhost": "http://localhost:8000/v1",
    "loopback ipv6": "http://[::1]:8000/v1",
    "rfc1918": "http://10.1.2.3/v1",
    "rfc1918 192": "https://192.168.1.10/v1",
    "carrier-grade nat": "http://100.64.0.1/v1",
    "unique local ipv6": "http://[fd12:3456::1]/v1",
}


@pytest.mark.parametrize("case", list(REFUSED_ALWAYS))
def test_a_base_url_to_metadata_or_another_scheme_is_refused_even_when_private_urls_are_allowed(settings, case):
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = True
    with pytest.raises(ValidationError):
        base_url_validate(REFUSED_ALWAYS[case])


@pytest.mark.parametrize("case", list(PRIVATE))
def test_a_private_base_url_needs_the_setting(settings, case):
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = False
    with pytest.raises(ValidationError) as caught:
        base_url_validate(PRIVATE[case])
    assert "EP_ALLOW_PRIVATE_PROVIDER_URLS" in str(caught.value)
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = True
    base_url_validate(PRIVATE[case])


def test_an_empty_base_url_is_the_public_api_and_a_public_address_passes(settings):
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = False
    base_url_validate("")
    base_url_validate("https://8.8.8.8/v1")  # an IP literal: no DNS needed on this offline machine


def test_an_unresolvable_host_is_refused(settings):
    with pytest.raises(ValidationError, match="does not resolve"):
        base_url_validate("https://no-such-host.invalid/v1")


@pytest.mark.django_db
def test_the_model_refuses_a_metadata_base_url_through_full_clean():
    provider = Provider(name="evil", kind="openai", base_url="http://169.254.169.254/v1")
    with pytest.raises(ValidationError) as caught:
        provider.full_clean()
    assert "base_url" in caught.value.message_dict


# -- who may point a provider somewhere ---------------------------------------------------

def _provider_post(base_url: str, **extra) -> dict:
    return {"name": "local", "kind": "openai", "base_url": base_url, "enabled": "on", "connect_timeout": "5",
            "read_timeout": "60", "options": '{"cli_path": "/bin/sh"}', **extra}


def test_an_operator_cannot_set_a_base_url_or_options(people, world):
    response = client_for(people.olive).post(reverse("providers:create"), _provider_post("http://127.0.0.1:9/v1"))
    assert response.status_code == 302
    provider = Provider.objects.get(name="local")
    assert provider.base_url == "" and provider.options == {}  # the disabled fields kept their defaults
    world.demo.refresh_from_db()
    before = world.demo.options
    response = client_for(people.olive).post(reverse("providers:edit", args=["demo"]), {
        **_provider_post("http://127.0.0.1:9/v1", name="demo", kind="demo"), "credential": "sk-operator-may-set"})
    assert response.status_code == 302
    world.demo.refresh_from_db()
    assert world.demo.base_url == "" and world.demo.options == before
    assert world.demo.get_credential() == "sk-operator-may-set"  # operators still manage credentials


def test_an_admin_sets_a_base_url_and_the_dashboard_validates_it(people, settings):
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = False
    ada = client_for(people.ada)
    response = ada.post(reverse("providers:create"), _provider_post("http://169.254.169.254/latest"))
    assert response.status_code == 400 and "link-local or cloud metadata" in response.content.decode()
    response = ada.post(reverse("providers:create"), _provider_post("http://127.0.0.1:11434/v1"))
    assert response.status_code == 400 and "EP_ALLOW_PRIVATE_PROVIDER_URLS" in response.content.decode()
    assert not Provider.objects.filter(name="local").exists()
    settings.EP_ALLOW_PRIVATE_PROVIDER_URLS = True
    assert ada.post(reverse("providers:create"), _provider_post("http://127.0.0.1:11434/v1")).status_code == 302
    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:11434/v1"


# -- redirects ---------------------------------------------------------------------------------

CANARY = "sk-canary-redirect-0123456789abcdef"


class Listener:
    """A loopback server that records what reaches it; `redirect_to` makes it answer 307."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.port = _free_port()
        self.seen: list[dict] = []
        self.redirect_to = redirect_to
        app = Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=0))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def answer(self, request: Request):
        self.seen.append({"path": request.url.path, "headers": dict(request.headers),
                          "body": (await request.body()).decode(errors="replace")})
        if self.redirect_to:
            return RedirectResponse(self.redirect_to + request.url.path, status_code=307)
        return JSONResponse({"error": {"message": "you should not be here"}}, status_code=418)

    def __enter__(self) -> Listener:
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_a_providers_redirect_is_not_followed_with_the_key(kind):
    with Listener() as elsewhere, Listener(redirect_to=f"http://127.0.0.1:{0}") as provider:
        provider.redirect_to = f"http://127.0.0.1:{elsewhere.port}"
        config = AdapterConfig(provider_id=9000 + len(kind), name=kind, kind=kind, credential=CANARY,
                               base_url=f"http://127.0.0.1:{provider.port}" + ("/v1" if kind == "openai" else ""),
                               connect_timeout=2, read_timeout=5)
        adapter = adapter_class(kind)(config)
        request = ChatRequest(model="some-model", messages=[Message("user", "the secret plan")], max_tokens=5)
        with pytest.raises(ProviderError):
            asyncio.run(adapter.chat(request))
    assert provider.seen, "the adapter called its provider"
    assert CANARY in str(provider.seen[0]["headers"])  # it did send the key there, where it belongs
    assert elsewhere.seen == [], f"the redirect was followed: {elsewhere.seen}"
