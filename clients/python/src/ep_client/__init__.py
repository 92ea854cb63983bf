"""ep_client: the Execution Platform's Python client (the one Hive imports).

    from ep_client import ExecutionPlatformClient, AsyncExecutionPlatformClient

Sync, async and streaming; standard library and httpx only. See
ep_client.client for the details and docs/MIGRATING_HIVE.md in the platform's
repository for the guide.
"""

from ep_client.client import (
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
    ToolCall,
    UpstreamError,
    Usage,
    error_from_body,
    new_run_id,
)

__version__ = "0.1.0"  # keep equal to pyproject.toml's (a test checks the installed metadata)

__all__ = [
    "APIConnectionError", "AsyncExecutionPlatformClient", "AuthenticationError", "BudgetExceededError",
    "ChatResponse", "ExecutionPlatformClient", "ExecutionPlatformError", "InvalidRequestError", "NotFoundError",
    "PermissionDeniedError", "RateLimitError", "StreamEvent", "ToolCall", "UpstreamError", "Usage", "error_from_body",
    "new_run_id",
]
