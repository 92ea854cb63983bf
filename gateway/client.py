"""Deprecated: the Hive client is now its own package, `ep_client`.

It lives in clients/python/ (the distribution `execution-platform-client`):

    pip install ./clients/python
    from ep_client import ExecutionPlatformClient

This module only re-exports it, unchanged, for one release, so that
`from gateway.client import ...` (and the `execution_platform.client` shim of
docs/MIGRATING_HIVE.md) keeps working; it will then be removed. Change imports
to `ep_client`. It warns nothing at import on purpose (test suites that turn
warnings into errors must not break); this docstring is the notice.

Like the client, it imports nothing of the server: no Django.
"""

from ep_client import *  # noqa: F401,F403
from ep_client.client import (  # noqa: F401  (the old module's other public names)
    CALL_OPTIONS,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    RETRYABLE,
    APIConnectionError,
    AsyncExecutionPlatformClient,
    AuthenticationError,
    BudgetExceededError,
    ChatResponse,
    ExecutionPlatformClient,
    ExecutionPlatformError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamEvent,
    StreamParser,
    ToolCall,
    UpstreamError,
    Usage,
    error_from_body,
    new_run_id,
    response_from,
)

# What `from gateway.client import *` gave before the move.
__all__ = [
    "APIConnectionError", "AsyncExecutionPlatformClient", "AuthenticationError", "BudgetExceededError",
    "ChatResponse", "ExecutionPlatformClient", "ExecutionPlatformError", "InvalidRequestError", "NotFoundError",
    "PermissionDeniedError", "RateLimitError", "StreamEvent", "ToolCall", "UpstreamError", "Usage", "new_run_id",
]
