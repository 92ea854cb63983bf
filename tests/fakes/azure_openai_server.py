"""A fake Azure OpenAI resource: the OpenAI fake's answers behind Azure's paths and auth.

Azure serves Chat Completions and embeddings per *deployment*:
POST /openai/deployments/{deployment}/chat/completions?api-version=2024-10-21,
authenticated by an `api-key` header or an Entra ID token (`Authorization: Bearer`).
Without `api-version` Azure answers 404 "Resource not found"; without a credential
401 {"error": {"code": "401", "message": "Access denied due to invalid subscription
key..."}}. The bodies (chat.completion, chunks, the error envelope) are OpenAI's,
so this reuses tests/fakes/openai_server.py and only checks what Azure adds.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.openai_server import FakeOpenAIServer

API_VERSION = "2024-10-21"


class FakeAzureOpenAIServer(FakeOpenAIServer):
    kind = "azure_openai"
    model = "gpt-4o-mini-prod"  # a deployment name: Azure routes by it, not by the model id

    def adapter_config(self, credential: str = "azure-test-key-0123456789", **overrides: Any) -> AdapterConfig:
        fields: dict[str, Any] = dict(
            provider_id=7401, name="azure", kind="azure_openai", base_url=self.base_url,
            credential=credential, read_timeout=10, connect_timeout=2, options={"api_version": API_VERSION},
        )
        fields.update(overrides)
        return AdapterConfig(**fields)

    def build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/openai/deployments/{deployment}/chat/completions", self._azure(self._chat), methods=["POST"]),
            Route("/openai/deployments/{deployment}/embeddings", self._azure(self._embeddings), methods=["POST"]),
        ])

    def _azure(self, handler):
        async def endpoint(request: Request) -> Response:
            if request.query_params.get("api-version") != API_VERSION:
                self.record(request.url.path, dict(request.headers), None)
                return JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, 404)
            return await handler(request)
        return endpoint

    def _unauthorized(self, request: Request) -> Response | None:
        key = request.headers.get("api-key", "").strip()
        auth = request.headers.get("authorization", "")
        if key or (auth.startswith("Bearer ") and auth[7:].strip()):
            return None
        message = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                   "a valid key for an active subscription and use a correct regional API endpoint for your "
                   "resource.")
        return JSONResponse({"error": {"code": "401", "message": message}}, 401)

    def deployment_of(self, index: int = -1) -> str:
        """The deployment the request at `index` went to, read from its path."""
        return self.requests[index]["path"].split("/")[3]
