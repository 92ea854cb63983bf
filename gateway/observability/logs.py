"""Log lines an operator can use: the request id on each, secrets on none.

- `RequestContextFilter` stamps every record with the request id (and trace id)
  of the request being served, from a contextvar the LedgerMiddleware sets.
  asyncio tasks and `sync_to_async` threads copy contextvars, so lines logged by
  the SDKs and the ledger thread carry the id too.
- `RedactFilter` masks provider keys, our API keys and credential headers in the
  message, its args, the traceback and the stack. It sits on the handler, not on
  a logger: a filter on a logger does not see records propagated from its
  children (openai, anthropic, httpcore, ...), a handler's sees them all.
- `JsonFormatter` writes one JSON object a line (LOG_FORMAT=json, the default
  when DEBUG is off) and redacts its output once more, extras included.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

_request_id: ContextVar[str] = ContextVar("ep_request_id", default="")
_trace_id: ContextVar[str] = ContextVar("ep_trace_id", default="")

MASK = "[REDACTED]"
# Key shapes: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Google (AIza), ours (ep-).
_KEYS = re.compile(r"\b(?:sk-ant-|sk-|AIza|ep-)[A-Za-z0-9_\-]{8,}")
# The value after a credential header or parameter name, in any of the shapes
# it gets logged: `Authorization: Bearer x`, `'x-api-key': 'x'`, `"api_key"="x"`, `?key=x`.
_HEADERS = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|x-goog-api-key|api[-_]key|credential|password|secret)"
    r"""(['"]?\s*(?:[:=]\s*[(]?(?:b?['"])?|,\s*b?['"]))(?:(?:bearer|basic|token)\s+)?[^\s'",})\]\\]+"""
)
_QUERY_KEY = re.compile(r"(?i)([?&](?:key|api_key|access_token)=)[^&\s'\"]+")


def redact(text: str) -> str:
    """`text` with every key and credential header value masked."""
    if not text:
        return text
    text = _HEADERS.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _QUERY_KEY.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _KEYS.sub(MASK, text)


def bind_request(request_id: str, trace_id: str = "") -> None:
    """Tag what this task (and what it starts) logs from now on.

    Not reset afterwards on purpose: Django serves each request in its own
    task, so the values end with it, and a streamed body, sent after the
    middleware returned, still logs with its request id."""
    _request_id.set(request_id)
    _trace_id.set(trace_id)


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", "") or _request_id.get()
        record.trace_id = getattr(record, "trace_id", "") or _trace_id.get()
        return True


class RedactFilter(logging.Filter):
    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what can be kept
            message = f"{record.msg} {record.args}"
        # The message is formatted now, so args (which may hold a key) go.
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# LogRecord's own attributes; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or _request_id.get(),
        }
        trace_id = getattr(record, "trace_id", "") or _trace_id.get()
        if trace_id:
            entry["trace_id"] = trace_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry and name not in ("request_id", "trace_id"):
                entry[name] = value
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        record.request_id = record.request_id or "-"
        return redact(super().format(record))
