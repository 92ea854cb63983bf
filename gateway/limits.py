"""Request limits every chat endpoint checks before any provider is called.

The body size is Django's (DATA_UPLOAD_MAX_MEMORY_SIZE = EP_MAX_BODY_BYTES,
413 `request_too_large`); these are the limits that need the parsed request
and its route: the number of messages, and `max_tokens` against the caps of
the persona and of the API key.
"""

from __future__ import annotations

from django.conf import settings

from gateway.errors import InvalidRequest
from gateway.pipeline import Route


def request_limits_check(*, messages: int, max_tokens: int | None, route: Route) -> None:
    """Raise a 400 envelope when the request is over a limit.

    A caller asking for more output than the cap is refused, not clamped: a
    silently shortened answer (finish_reason "length") looks like the model's
    choice, while a refusal names the cap, and the caller can ask within it.
    """
    limit = settings.EP_MAX_MESSAGES
    if messages > limit:
        raise InvalidRequest(
            f"This request has {messages} messages; this gateway accepts at most {limit}.",
            code="too_many_messages", param="messages",
        )
    cap = route.max_output_tokens
    if cap and max_tokens and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {max_tokens}, above the cap of {cap} output tokens for "
            f"'{route.label}' with this API key; ask for at most {cap}.",
            code="max_tokens_too_large", param="max_tokens",
        )
