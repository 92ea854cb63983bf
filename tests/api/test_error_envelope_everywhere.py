"""Every answer on the API's paths is the JSON envelope, with DEBUG on too: a
wrong method, an unknown path under any API prefix, an SDK whose base URL lacks
/v1, a body over the limit (whose message states the limit)."""

from __future__ import annotations

import httpx
import openai
import pytest

from budgets.models import Usage
from tests.conftest import start_daphne, stop_process

UNKNOWN = ["/v1/nothing-here", "/api/v1/nothing-here", "/api/nothing", "/health/nothing", "/costs/nothing",
           "/capabilities/nothing", "/metrics/nothing"]


@pytest.fixture(scope="module")
def debug_server(test_database_url):
    """A second live gateway with DEBUG=1, as `make run` serves it."""
    server = start_daphne(test_database_url, name="gateway-debug", DEBUG="1")
    yield server
    stop_process(server.process)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    error = response.json()["error"]
    assert (error["code"], error["request_id"]) == (code, response.headers["x-request-id"])
    return error


@pytest.mark.parametrize("server", ["live", "debug_server"])
def test_a_wrong_method_is_a_405_envelope_and_a_keyed_one_leaves_its_row(request, live, world, server):
    url = request.getfixturevalue(server).url  # `live` first: the world is committed for both servers
    error = assert_envelope(httpx.get(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {world.red_key}"}),
                            405, "method_not_allowed")
    assert error["message"] == "GET is not allowed on /v1/chat/completions; it answers POST."
    row = Usage.objects.get()
    assert (row.team, row.status, row.http_status, row.error_code) == (world.red, "refused", 405, "method_not_allowed")
    response = httpx.delete(url + "/v1/models")  # no key: told the method, nothing to bill
    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
    assert Usage.objects.count() == 1


@pytest.mark.parametrize("path", UNKNOWN)
def test_an_unknown_path_under_an_api_prefix_is_a_json_404_with_debug_on(live, debug_server, path):
    response = httpx.get(debug_server.url + path)
    error = assert_envelope(response, 404, "unknown_endpoint")
    assert error["message"] == f"No endpoint at GET {path}."
    assert "urlpatterns" not in response.text and "<html" not in response.text.lower()


@pytest.mark.parametrize("server", ["live", "debug_server"])
def test_an_sdk_without_v1_in_its_base_url_is_told_to_add_it(request, live, world, server):
    url = request.getfixturevalue(server).url  # `live` first: the world is committed for both servers
    sdk = openai.OpenAI(base_url=url, api_key=world.red_key, max_retries=0)  # forgot the /v1
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="architect", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.code == "unknown_endpoint"
    assert "Set the client's base URL to end in /v1" in raised.value.message
    assert_envelope(httpx.get(url + "/models"), 404, "unknown_endpoint")


def test_the_413_message_states_the_limit(live, world):
    body = b'{"model": "architect", "messages": [{"role": "user", "content": "' + b"x" * (9 * 2**20) + b'"}]}'
    response = httpx.post(live.url + "/v1/chat/completions", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {world.red_key}", "Content-Type": "application/json"})
    error = assert_envelope(response, 413, "request_too_large")
    assert error["message"] == ("Request body is larger than this gateway accepts: at most 8388608 bytes "
                                "(8 MiB, EP_MAX_BODY_BYTES).")


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/v1/responses/resp_a%00b", None, 404, "response_not_found"),
    ("DELETE", "/v1/responses/a%00b", None, 404, "response_not_found"),
    ("GET", "/v1/responses/a%00b/input_items", None, 404, "response_not_found"),
    ("POST", "/v1/responses", {"model": "architect", "input": "hi", "previous_response_id": "resp_\u0000"}, 404,
     "previous_response_not_found"),
    ("GET", "/api/v1/runs/a%00b", None, 400, "invalid_run_id"),
])
def test_an_id_with_a_nul_is_refused_and_recorded_not_a_500(live, world, method, path, body, status, code):
    """PostgreSQL text cannot hold a NUL: such an id must be refused before any
    query, and the refusal's message must not echo it, or its row could not be written."""
    response = httpx.request(method, live.url + path, json=body, headers={"Authorization": f"Bearer {world.red_key}"})
    error = assert_envelope(response, status, code)
    assert "\x00" not in error["message"]
    row = Usage.objects.get()
    assert (row.http_status, row.error_code) == (status, code)
