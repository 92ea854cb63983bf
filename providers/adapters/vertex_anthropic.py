"""Claude on Google Vertex AI, through the official `anthropic` SDK's Vertex client.

The anthropic adapter with another client: `AsyncAnthropicVertex` sends the same
Messages body to `.../projects/<p>/locations/<region>/publishers/anthropic/models/
<model>:rawPredict` (`:streamRawPredict` for streams), moving `model` into the URL
and adding `anthropic_version`; answers, stream events and errors are Anthropic's,
so the mapping is providers/adapters/anthropic.py's. Options `project` and
`region` (Vertex's location) say where. Credentials are Google's, as
for vertex_gemini: a service-account key file (the SDK refreshes its token, in a
thread) or an access token (providers/adapters/cloud_credentials.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import anthropic

from providers.adapters.anthropic import AnthropicAdapter
from providers.adapters.cloud_credentials import google_access_token, google_auth_failure, google_credentials
from providers.types import Capabilities, ChatRequest, ChatResult, ProviderError, StreamEvent

DEFAULT_REGION = "us-east5"  # where Claude models are served on Vertex AI


class VertexAnthropicAdapter(AnthropicAdapter):
    kind = "vertex_anthropic"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True, json_mode=True, json_schema=True,
        system_prompt=True,
        notes="Claude on Google Vertex AI via the anthropic SDK's Vertex client; otherwise as anthropic.",
    )

    def _make_client(self) -> anthropic.AsyncAnthropicVertex:
        self._setup_error: ProviderError | None = None
        config, opts = self.config, self.config.options
        auth: dict = {"access_token": "no-credential"}  # never reaches the wire: _check_setup refuses first
        try:
            if not config.credential or not opts.get("project"):
                raise ValueError("a Vertex AI provider needs a Google credential and a project")
            token = google_access_token(config.credential)
            auth = {"access_token": token} if token else {"credentials": google_credentials(config.credential)}
        except ValueError as exc:
            name = config.name or self.kind
            self._setup_error = ProviderError("auth", f"{name}: {exc}", provider=name)
        return anthropic.AsyncAnthropicVertex(
            region=opts.get("region") or DEFAULT_REGION,
            project_id=opts.get("project") or "unset",
            base_url=config.base_url or None,  # None: the SDK's regional endpoint
            **auth,
            **self._client_transport(),
        )

    def _error(self, exc: BaseException) -> ProviderError:
        failure = google_auth_failure(exc)
        if failure is None:
            return super()._error(exc)
        name = self.config.name or self.kind
        return ProviderError(failure[0], f"{name}: {failure[1]}", provider=name)  # type: ignore[arg-type]

    async def chat(self, request: ChatRequest) -> ChatResult:
        if self._setup_error is not None:
            raise self._setup_error
        return await super().chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if self._setup_error is not None:
            yield StreamEvent(type="error", error=self._setup_error)
            return
        # aclosing: a client that leaves closes this generator, and so the anthropic one's connection.
        async with aclosing(super().stream(request)) as events:
            async for event in events:
                yield event
