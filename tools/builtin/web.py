"""http_fetch: read one web page or API answer (GET, text only), SSRF-guarded.

Every hop (the URL and each redirect's target) passes the same check as a
provider's base URL (providers/validation.py): http(s) only, no credentials in
the URL, no link-local or cloud metadata address ever, loopback and private
addresses only when EP_ALLOW_PRIVATE_PROVIDER_URLS is on. Residual risk as for
providers: DNS may answer differently between the check and the connection
(rebinding; docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urljoin

import httpx
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from providers.validation import base_url_validate
from tools.servers.builtin import builtin_tool, server_options
from tools.types import ToolContext, ToolError, ToolResult

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 200_000
HARD_MAX_BYTES = 2_000_000
DEFAULT_TIMEOUT = 15.0
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/x-ndjson")
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "ExecutionPlatform-http_fetch/1.0"


@builtin_tool(
    "http_fetch",
    "GET one URL (http or https) and return its text: HTML, JSON, XML or plain text, cut at max_bytes. "
    "Internal and cloud-metadata addresses are refused, on every redirect too. No cookies, no credentials.",
    {"url": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "The http(s) URL to GET."},
     "max_bytes": {"type": "integer", "minimum": 1, "maximum": HARD_MAX_BYTES, "default": DEFAULT_MAX_BYTES}},
    required=("url",),
)
async def http_fetch(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    options = server_options(server, "http_fetch")
    limit = min(arguments.get("max_bytes", DEFAULT_MAX_BYTES), int(options.get("max_bytes", HARD_MAX_BYTES)))
    timeout = float(options.get("timeout_seconds", DEFAULT_TIMEOUT))
    try:
        async with asyncio.timeout(timeout):  # the whole fetch, every hop: a slow drip is cut too
            return await _fetch(arguments["url"], limit, timeout)
    except TimeoutError:
        raise ToolError(f"Fetching {arguments['url']} took longer than {timeout:g} s; stopped.",
                        code="tool_timeout") from None


async def _fetch(url: str, limit: int, timeout: float) -> ToolResult:
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": USER_AGENT, "Accept": "text/*, application/json"}) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await _guard(url)
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await _read(response, url, limit)
            except httpx.HTTPError as exc:
                raise ToolError(f"Fetching {url} failed: {type(exc).__name__}.", code="fetch_failed") from None
    raise ToolError(f"More than {MAX_REDIRECTS} redirects; stopped at {url}.", code="too_many_redirects")


async def _guard(url: str) -> None:
    try:
        await sync_to_async(base_url_validate, thread_sensitive=False)(url)
    except ValidationError as exc:
        raise ToolError(f"Refused to fetch {url}: {' '.join(exc.messages)}", code="url_refused") from None


async def _read(response: httpx.Response, url: str, limit: int) -> ToolResult:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type.startswith(TEXT_TYPES) or content_type.endswith(("+json", "+xml"))):
        raise ToolError(f"{url} answered {content_type or 'no content type'}; http_fetch reads text only.",
                        code="not_text")
    body, truncated = bytearray(), False
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            del body[limit:]
            truncated = True
            break
    text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
    meta = {"url": url, "status": response.status_code, "content_type": content_type, "truncated": truncated}
    header = json.dumps(meta)
    return ToolResult(f"{header}\n\n{text}", is_error=response.status_code >= 400,
                      error_code="http_error" if response.status_code >= 400 else "", structured=meta)
