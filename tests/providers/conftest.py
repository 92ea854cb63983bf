"""The `harness` fixture: every adapter kind's fake provider, started once per module."""

from __future__ import annotations

from importlib import import_module

import pytest

from tests.fakes import FAKES


def _load(kind: str):
    module_name, class_name = FAKES[kind].rsplit(".", 1)
    return getattr(import_module(module_name), class_name)


@pytest.fixture(scope="module", params=sorted(FAKES))
def _started_harness(request):
    harness = _load(request.param)().start()
    yield harness
    harness.stop()


@pytest.fixture
def harness(_started_harness):
    _started_harness.reset()
    yield _started_harness
    _started_harness.reset()

