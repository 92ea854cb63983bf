"""Every refusal and failure as the one JSON envelope, rendered here once.

`install(api)` registers the NinjaAPI's handlers; `not_found` / `server_error`
are the project's 404 and 500 handlers, which answer API paths with the same
envelope (and dashboard paths with a page). The envelope is OpenAI's error
shape, so OpenAI clients raise the right exception; Anthropic's routes answer
in Anthropic's shape (api/anthropic_wire.py).
"""

from __future__ import annotations

import logging
import re

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseServerError
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError

from api import anthropic_wire
from api.auth import ApiKeyAuth, bearer_token
from api.paths import is_api_path, is_unprefixed_sdk_path, request_id_of
from api.responses import json_response
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound, body_too_large

log = logging.getLogger("api.errors")


# -- the envelope, and how the OpenAPI schema declares it -------------------------------


class ErrorBody(Schema):
    type: str
    code: str
    message: str
    param: str | None = None
    request_id: str


class ErrorEnvelope(Schema):
    """What every refusal and failure answers with (OpenAI's error shape)."""

    error: ErrorBody


# Every route that takes an API key can answer these before its own work:
# a bad or missing key (401), a key in the query string (400), a rate limit
# or budget (429), the key or config store down (503), a bug (500).
KEYED = (400, 401, 429, 500, 503)
# A chat route can also refuse the model (403 direct scope, 404 unknown), the
# body (413), end a server-side tool loop at a cap (422, gateway/tool_loop.py),
# and report the provider's failure after every fallback (502, 504).
CHAT = (*KEYED, 403, 404, 413, 422, 502, 504)


# The response cache's request and response header (gateway/response_cache.py), on every chat route.
CACHE_HEADER_DOC = {
    "in": "header", "name": "X-EP-Cache", "required": False,
    "schema": {"type": "string", "enum": ["bypass", "refresh"]},
    "description": "For a persona with the response cache on: `bypass` neither reads nor writes the cache; "
                   "`refresh` calls the provider and replaces the cached answer. Anything else is a 400 "
                   "`invalid_cache_header`.",
}
CACHE_RESPONSE_HEADER_DOC = {
    "X-EP-Cache": {"schema": {"type": "string", "enum": ["hit", "miss", "bypass", "refresh", "skip"]},
                   "description": "What the persona's response cache did (absent when it has none): `hit` "
                                  "(answered from the cache at no cost), `miss` (answered by a provider, now "
                                  "cached), `bypass`, `refresh`, or `skip` (not cacheable, e.g. temperature "
                                  "above 0)."},
}


def sse_doc(description: str) -> dict:
    """openapi_extra for a chat route that answers JSON, or SSE when asked to stream."""
    return {"parameters": [CACHE_HEADER_DOC],
            "responses": {200: {"description": description, "headers": CACHE_RESPONSE_HEADER_DOC,
                                "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}


def error_responses(*statuses: int, schema: type = ErrorEnvelope) -> dict[int, type]:
    """`response=` entries declaring the error envelope for these statuses."""
    return {status: schema for status in sorted(set(statuses))}


def envelope(error: GatewayError, request_id: str) -> dict:
    return {
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "request_id": request_id,
        }
    }


def internal_error() -> GatewayError:
    error = GatewayError("Internal error; quote the request id when reporting it.", status=500, code="internal_error")
    error.type = "api_error"
    return error


# -- rendering ---------------------------------------------------------------------------


def error_response(request: HttpRequest, error: GatewayError) -> HttpResponse:
    """The error as this path's clients read it, filed on the request's call (its Usage row)."""
    call = getattr(request, "ep_call", None)
    if call is not None:
        call.fail(error)
    request_id = request_id_of(request)
    if anthropic_wire.owns(request.path, request.headers):  # Claude clients parse Anthropic's error shape
        return anthropic_wire.error_response(error, request_id)
    return json_response(envelope(error, request_id), request_id, status=error.status, headers=error.headers)


# How pydantic names the branches of a union in an error's location ("str",
# "list[ContentPartIn]", "function-after[...]"): not a field the client sent.
_UNION_BRANCH = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\]|"
                           r"[A-Z]\w*)$")


def _most_telling(errors: list[dict]) -> dict:
    """The error to report. When a value fails every branch of a union, pydantic
    lists one error per branch, the first being "should be a valid string" for
    the plain-string branch; the deepest one names the real problem."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ())]
    branch_at = next((i for i, part in enumerate(loc) if _UNION_BRANCH.match(part)), None)
    if branch_at is None:
        return first
    same_value = [e for e in errors if [str(p) for p in e.get("loc", ())][:branch_at] == loc[:branch_at]]
    return max(same_value, key=lambda e: len(e.get("loc", ())))


def _describe_validation(errors: list[dict]) -> tuple[str, str | None]:
    first = _most_telling(errors)
    loc = [str(part) for part in first.get("loc", ())
           if part not in ("body", "payload") and not _UNION_BRANCH.match(str(part))]
    # ninja names the body parameter; drop it so `param` is the client's field.
    if loc and loc[0] == "body":
        loc = loc[1:]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    return (f"{param}: {message}" if param else message), param


def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    message, param = _describe_validation(exc.errors)
    return error_response(request, InvalidRequest(f"Invalid request: {message}", param=param))


def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    message = str(exc)
    # ninja reports a body that is not JSON as a plain 400; give it its own code.
    code = "invalid_json" if message.startswith("Cannot parse request body") else f"http_{exc.status_code}"
    return error_response(request, GatewayError(message, status=exc.status_code, code=code))


def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled error in %s", request.path)
    return error_response(request, internal_error())


def install(api: NinjaAPI) -> None:
    """Register every handler on the API: nothing leaves it but the envelope."""
    api.add_exception_handler(GatewayError, error_response)
    api.add_exception_handler(ValidationError, on_validation_error)
    api.add_exception_handler(
        AuthenticationError, lambda request, exc: error_response(request, AuthenticationFailed("Missing or invalid API key.")))
    api.add_exception_handler(HttpError, on_http_error)
    api.add_exception_handler(RequestDataTooBig, lambda request, exc: error_response(request, body_too_large()))
    api.add_exception_handler(Http404, lambda request, exc: error_response(request, NotFound("Not found.")))
    api.add_exception_handler(Exception, on_unexpected)


async def method_not_allowed(request: HttpRequest, refused: HttpResponse) -> HttpResponse:
    """ninja answers a known path's wrong method with Django's plain-text 405
    (api/middleware.py hands it here): the envelope instead, with its Allow header.
    A request with a valid key is authenticated first, so it leaves its Usage row
    like any other refusal; without one it is just told the method."""
    allowed = refused.get("Allow", "")
    if bearer_token(request):
        try:
            await ApiKeyAuth()(request)
        except GatewayError:
            pass  # a bad key: the wrong method is still the answer; nothing to bill
    message = f"{request.method} is not allowed on {request.path}; it answers {allowed}."
    return error_response(request, GatewayError(message, status=405, code="method_not_allowed",
                                                headers={"Allow": allowed}))


# -- the project's 404 and 500 handlers (config/urls.py) ---------------------------------------


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if is_api_path(request.path):
        error = NotFound(f"No endpoint at {request.method} {request.path}.", code="unknown_endpoint")
        return error_response(request, error)
    if is_unprefixed_sdk_path(request.path):
        error = NotFound(f"No endpoint at {request.method} {request.path}: the API is under /v1/. Set the "
                         f"client's base URL to end in /v1 (e.g. http://127.0.0.1:8000/v1).", code="unknown_endpoint")
        return error_response(request, error)
    return HttpResponseNotFound("<h1>Not found</h1><p>There is no page at this address.</p>")


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(request, internal_error())
    return HttpResponseServerError("<h1>Server error</h1>")
