"""The configuration cache (gateway/config.py) and a change saved inside a
transaction: its signal fires before the commit, so a request that reloads the
configuration in between reads the rows as they were. The generation moves
again at the commit, so such a reload is never served for long."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection, transaction

from gateway.config import config_cache
from personas.models import RouteStep
from providers.models import Model

pytestmark = pytest.mark.django_db(transaction=True)


def _first_model(snapshot) -> str:
    return snapshot.personas["architect"].steps[0].model


def _reload_in_another_thread() -> str:
    """What a request in another thread (its own database connection) loads now."""
    found: list = []

    def load() -> None:
        try:
            found.append(_first_model(asyncio.run(config_cache.snapshot())))
        finally:
            connection.close()

    worker = threading.Thread(target=load)
    worker.start()
    worker.join(10)
    return found[0]


def test_a_reload_between_a_save_and_its_commit_is_dropped_at_the_commit(world):
    Model.objects.create(provider=world.demo, name="demo-v2", input_price=0, output_price=0)
    step = RouteStep.objects.get(persona__slug="architect", position=0)
    assert _first_model(asyncio.run(config_cache.snapshot())) == "demo"
    with transaction.atomic():
        step.model = "demo-v2"
        step.save()
        # Another request, after the save's signal and before its commit: the old row.
        assert _reload_in_another_thread() == "demo"
    assert _first_model(asyncio.run(config_cache.snapshot())) == "demo-v2"


def test_a_change_outside_a_transaction_is_seen_at_once(world):
    Model.objects.create(provider=world.demo, name="demo-v2", input_price=0, output_price=0)
    step = RouteStep.objects.get(persona__slug="architect", position=0)
    assert _first_model(asyncio.run(config_cache.snapshot())) == "demo"
    step.model = "demo-v2"
    step.save()
    assert _first_model(asyncio.run(config_cache.snapshot())) == "demo-v2"
