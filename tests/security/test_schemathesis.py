"""Schemathesis against the live gateway's own /api/openapi.json: every
operation, with a valid key and with none, gets no 5xx and answers only
what its schema declares (status codes, content types, bodies)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15


class LoopbackOnly(requests.Session):
    """Every request schemathesis sends (redirects included) goes to 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def send(self, request, **kwargs):
        host = urlsplit(request.url).hostname
        assert host == "127.0.0.1", f"schemathesis tried to reach {request.url}"
        self.sent += 1
        return super().send(request, **kwargs)


@pytest.fixture
def schema(live):
    loaded = schemathesis.openapi.from_url(live.url + "/api/openapi.json", timeout=10)
    loaded.config.base_url = live.url
    return loaded


def operations(schema) -> list:
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 10, [op.label for op in found]
    return found


def fuzz(operation, *, base_url: str, session: LoopbackOnly, headers: dict[str, str], mode: GenerationMode) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        case.headers = {**(case.headers or {}), **headers}
        response = case.call(base_url=base_url, session=session, timeout=30)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize(("credentials", "mode"), [
    ("valid key", GenerationMode.POSITIVE),  # requests the schema allows
    ("valid key", GenerationMode.NEGATIVE),  # requests it forbids: each a declared 4xx, never a 5xx
    ("no key", GenerationMode.POSITIVE),
])
def test_every_operation_answers_within_its_schema(live, world, schema, credentials, mode):
    headers = {"Authorization": f"Bearer {world.admin_key}"} if credentials == "valid key" else {}
    session = LoopbackOnly()
    failures = []
    for operation in operations(schema):
        try:
            fuzz(operation, base_url=live.url, session=session, headers=headers, mode=mode)
        except Unsatisfiable:
            # Negative mode: an operation with no parameters has no invalid request to make.
            assert mode is GenerationMode.NEGATIVE and not operation.body and not list(operation.iter_parameters())
        except Exception as error:  # collect every operation's first failure, then fail once
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
    assert session.sent >= 5 * EXAMPLES  # it really sent requests, to the loopback only
