"""The data one request carries through the pipeline: Call (what becomes its
Usage row), Route (the steps it may take) and Deadline (when it must be done).

These are plain data: the pipeline fills them, recording writes the row, and
tracing reads them; nothing here calls out.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from accounts.snapshot import KeyInfo
from budgets.ledger import Held
from budgets.ratelimit import Admission
from budgets.snapshot import BudgetInfo
from personas.snapshot import PersonaInfo, StepInfo
from providers.types import Usage


def new_request_id() -> str:
    # An identifier, not a secret: 128 random bits without uuid4's os.urandom
    # syscall and UUID object (3% of a request's CPU in the profile).
    return f"req_{random.getrandbits(128):032x}"


@dataclass(slots=True)
class Deadline:
    at: float  # time.monotonic() when the request must be answered

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()


@dataclass(slots=True)
class Call:
    """One request through the gateway; it becomes exactly one Usage row."""

    request_id: str
    endpoint: str
    key: KeyInfo | None = None
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    persona: str = ""
    provider: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    status: str = "ok"
    http_status: int = 200
    error_code: str = ""
    error_message: str = ""
    ttft_ms: int | None = None
    attempts: int = 0
    run_id: str = ""
    step: str = ""
    recorded: bool = False
    admitted: bool = False
    budgets: list[BudgetInfo] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    admission: Admission | None = None
    # Headers every response to this request carries (rate limits).
    response_headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # the caller's own deadline (X-EP-Timeout), seconds
    deadline: Deadline | None = None
    attempt_log: list[dict] = field(default_factory=list)
    # The route's steps that can serve this request, and those skipped with the
    # reason (gateway/pipeline.py `_serving`), worked out once per call.
    serving: list | None = None
    skipped: list[tuple] = field(default_factory=list)
    # The response cache (gateway/response_cache.py): what the caller asked
    # (X-EP-Cache: "", "bypass", "refresh"), what happened (hit, miss, ...), the
    # key an answer is kept under, and for a hit, the cost it avoided. `saved`
    # also holds what provider prompt caching saved on a provider call.
    cache_mode: str = ""
    cache_status: str = ""
    cache_key: str = ""
    cache_ttl: int = 0
    cache_hit: bool = False
    saved: Decimal = Decimal(0)
    # Observability (gateway/observability/tracing.py): the request span, and its trace id for the Usage row.
    span: object = None
    trace_id: str = ""

    def deadline_seconds(self) -> float:
        limit = settings.EP_DEFAULT_DEADLINE_SECONDS
        return min(self.timeout, limit) if self.timeout else limit

    def fail(self, error) -> None:
        """File a refusal or failure (a gateway.errors.GatewayError) on the call."""
        self.status = error.usage_status
        self.http_status = error.status
        self.error_code = error.code
        self.error_message = error.message[:300]

    def mark_cancelled(self, code: str = "client_disconnected") -> None:
        """The client stopped the request; the row keeps the tokens counted so far."""
        if self.status == "ok":
            self.status, self.http_status, self.error_code = "cancelled", 499, code

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = int((time.perf_counter() - self.started) * 1000)


@dataclass(frozen=True, slots=True)
class Route:
    label: str  # the persona slug, or provider/model for a direct call
    persona: PersonaInfo | None
    steps: tuple[StepInfo, ...]
    max_output_tokens: int | None = None  # the tighter of the persona's and the key's caps
