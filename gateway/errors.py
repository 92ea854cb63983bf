"""One exception hierarchy for everything the gateway refuses or fails at,
turned into the one JSON envelope in one place (api/urls.py)."""

from __future__ import annotations

from providers.types import ProviderError


class GatewayError(Exception):
    """A refusal or failure the client sees as
    {"error": {"type", "code", "message", "param", "request_id"}}."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.param = param
        self.headers = headers or {}

    @property
    def usage_status(self) -> str:
        """How the ledger files it: our refusals vs the provider's failures."""
        return "refused"


class InvalidRequest(GatewayError):
    pass


class PayloadTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


def body_too_large(limit: int | None = None, setting: str = "EP_MAX_BODY_BYTES") -> PayloadTooLarge:
    """The refusal of a body over the limit: EP_MAX_BODY_BYTES unless a path has its own."""
    from django.conf import settings

    limit = limit or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return PayloadTooLarge(f"Request body is larger than this gateway accepts: at most {limit} bytes "
                           f"({limit / 2**20:g} MiB, {setting}).")


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class BudgetExceeded(GatewayError):
    status = 429
    type = "budget_exceeded_error"
    code = "budget_exceeded"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"


# How a provider failure (after every fallback) reaches the client.
_PROVIDER_STATUS = {
    "rate_limited": (429, "rate_limit_error"),
    "timeout": (504, "timeout_error"),
    "unavailable": (502, "upstream_error"),
    "bad_request": (400, "invalid_request_error"),
    "auth": (502, "upstream_error"),  # our credential, not the caller's: not a 401
    "context_length": (400, "invalid_request_error"),
    "content_filter": (400, "invalid_request_error"),
}


class UpstreamFailed(GatewayError):
    """Every step of the route failed; carries the last provider error."""

    def __init__(self, error: ProviderError, *, provider: str, attempts: int) -> None:
        status, error_type = _PROVIDER_STATUS.get(error.kind, (502, "upstream_error"))
        code = "context_length_exceeded" if error.kind == "context_length" else f"provider_{error.kind}"
        headers = {}
        if error.kind == "rate_limited" and error.retry_after:
            headers["Retry-After"] = str(max(1, round(error.retry_after)))
        super().__init__(
            f"Provider '{provider}' failed ({error.kind}): {error.message}"[:500],
            code=code,
            status=status,
            headers=headers,
        )
        self.type = error_type
        self.provider_error = error
        self.attempts = attempts

    @property
    def usage_status(self) -> str:
        return "error"
