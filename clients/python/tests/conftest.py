"""The client's own tests. Those marked `live` talk to a running Execution
Platform named by the environment:

    EP_BASE_URL=http://localhost:8000 EP_API_KEY=ep-... python -m pytest clients/python/tests

The key needs the `chat` scope. The personas are the demo ones every
platform gets from `python manage.py bootstrap` (architect, developer,
reviewer); EP_TEST_PERSONAS="a,b" names two others. Without EP_BASE_URL and
EP_API_KEY the live tests are skipped, saying so; the rest need no server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

LIVE_VARIABLES = ("EP_BASE_URL", "EP_API_KEY")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [name for name in LIVE_VARIABLES if not os.environ.get(name)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=(
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: the live tests need a running "
        "Execution Platform (EP_BASE_URL=http://localhost:8000 EP_API_KEY=ep-..., a key with the chat scope)"))
    for item in items:
        if item.get_closest_marker("live"):
            item.add_marker(skip)


@dataclass(frozen=True)
class Platform:
    base_url: str
    api_key: str
    persona: str  # the client's persona
    other_persona: str  # a second one, named per call


@pytest.fixture
def platform() -> Platform:
    personas = [p.strip() for p in os.environ.get("EP_TEST_PERSONAS", "architect,developer").split(",") if p.strip()]
    if len(personas) < 2:
        pytest.fail("EP_TEST_PERSONAS names two personas, comma-separated (default: architect,developer).")
    return Platform(os.environ["EP_BASE_URL"], os.environ["EP_API_KEY"], personas[0], personas[1])
