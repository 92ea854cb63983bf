"""The demo provider needs no server: its harness turns scripted faults into the
demo's documented simulation options (providers/adapters/demo.py)."""

from __future__ import annotations

from collections import deque

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeReply, Fault

_STATUS_KINDS = {429: "rate_limited", 500: "unavailable", 503: "unavailable", 400: "bad_request", 401: "auth"}


class DemoHarness:
    kind = "demo"
    model = "demo"
    scriptable = False  # the demo's answers are its own, not scripted
    reports_reasoning_tokens = False

    def __init__(self) -> None:
        self._scripts: deque = deque()
        self.requests: list = []

    def start(self) -> "DemoHarness":
        return self

    def stop(self) -> None:
        pass

    def reset(self) -> None:
        self._scripts.clear()

    def script(self, *items: FakeReply | Fault) -> None:
        self._scripts.extend(items)

    @property
    def call_count(self) -> int:
        return 0

    def context_length_fault(self) -> Fault:
        return Fault("status", status=400, error_type="context_length")

    def _options_for(self, fault: Fault) -> dict:
        if fault.kind == "status":
            kind = "context_length" if fault.error_type == "context_length" else _STATUS_KINDS[fault.status]
            if kind == "context_length":
                return {"context_window": 1, "latency_ms": 0}
            return {"fail_with": kind, "retry_after": fault.retry_after, "latency_ms": 0}
        if fault.kind in ("stall", "stall_stream"):
            return {"latency_ms": fault.seconds * 1000}
        if fault.kind == "cut":
            return {"cut_after_chunks": fault.after_chunks, "latency_ms": 0}
        return {"fail_with": "unavailable", "latency_ms": 0}  # malformed

    def adapter_config(self, credential: str = "", **overrides) -> AdapterConfig:
        options = {"latency_ms": 0, "chunk_delay_ms": 0}
        while self._scripts:
            item = self._scripts.popleft()
            if isinstance(item, Fault):
                options.update(self._options_for(item))
                break
        fields = {"provider_id": 1, "name": "demo", "kind": "demo", "credential": credential, "options": options}
        fields.update(overrides)
        return AdapterConfig(**fields)
