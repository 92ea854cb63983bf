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
- One record is one line whatever a logged value holds: JSON escapes control
  characters (and here also U+0085, U+2028 and U+2029, which some readers
  split lines at); `PlainFormatter` escapes them in the message and indents
  a traceback's lines, so a newline in a caller's value cannot forge a record.
- `AccessLogScrub` keeps query strings (where a leaked key would be) out of
  the servers' access logs: uvicorn's `uvicorn.access`, daphne's runserver
  lines; `url_scrubbed` does the same for daphne's own access log (config/devserver.py).
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
# Key shapes: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Google (AIza, and ya29. OAuth
# access tokens: Vertex AI), ours (ep-).
_KEYS = re.compile(r"\b(?:sk-ant-|sk-|AIza|ep-|ya29\.)[A-Za-z0-9_\-]{8,}")
# The value after a credential header or parameter name, in any of the shapes
# it gets logged: `Authorization: Bearer x`, `'x-api-key': 'x'`, `"api_key"="x"`, `?key=x`.
_HEADERS = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|x-goog-api-key|api[-_]key|credential|password|secret"
    # AWS: the session token header (botocore logs it, and its canonical request, at DEBUG)
    r"|x-amz-security-token|session[-_]?token|secret[-_]?access[-_]?key)"
    r"""(['"]?\s*(?:[:=]\s*[(]?(?:b?['"])?|,\s*b?['"]))(?:(?:bearer|basic|token)\s+)?[^\s'",})\]\\]+"""
)
_QUERY_KEY = re.compile(r"(?i)([?&](?:key|api_key|access_token)=)[^&\s'\"]+")
# STS answers (AssumeRole) hand out keys in XML, which botocore logs at DEBUG.
_XML_SECRET = re.compile(r"(?i)(<(?:SecretAccessKey|SessionToken)>)[^<]+")


def redact(text: str) -> str:
    """`text` with every key and credential header value masked."""
    if not text:
        return text
    text = _HEADERS.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _QUERY_KEY.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _XML_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _KEYS.sub(MASK, text)


# C0 and C1 control characters and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What json.dumps(ensure_ascii=False) leaves raw that line-based readers may split at.
_JSON_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _escape(match: re.Match) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """`text` on one line: newlines and other control characters as escapes."""
    return _CONTROL.sub(_escape, text)


def url_scrubbed(url: str) -> str:
    """A request URL as an access log may keep it: no query string (a key sent
    in the URL would be there), the path redacted and on one line."""
    path, query_sep, _ = url.partition("?")
    return escape_controls(redact(path)) + ("?" + MASK if query_sep else "")


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
        return redact(json.dumps(entry, default=str, ensure_ascii=False).translate(_JSON_LINE_BREAKS))


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message` on one line; a traceback
    follows on lines that start with spaces, so every line that does not is a
    record of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        record.request_id = record.request_id or "-"
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for detail in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if detail:
                text += "".join("\n    " + escape_controls(line) for line in detail.split("\n"))
        return redact(text)


class AccessLogScrub(logging.Filter):
    """The URL on an access log record, scrubbed (`url_scrubbed`): uvicorn's
    records carry it as the third argument, daphne runserver's as `path`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], url_scrubbed(args[2]), *args[3:])
        elif isinstance(args, dict) and isinstance(args.get("path"), str):
            record.args = {**args, "path": url_scrubbed(args["path"])}
        return True


ACCESS_LOGGERS = ("uvicorn.access", "django.channels.server")


def access_logs_scrubbed() -> None:
    """Put AccessLogScrub on the servers' access loggers. On the loggers, not in
    settings.LOGGING: configuring a logger there drops the handlers uvicorn gave it."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AccessLogScrub) for f in logger.filters):
            logger.addFilter(AccessLogScrub())
