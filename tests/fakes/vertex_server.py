"""Fake Google Vertex AI endpoints: Gemini and Claude, behind Google OAuth.

Vertex AI serves publishers' models under one resource path,
`/{version}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}`,
authenticated by `Authorization: Bearer <OAuth access token>` (never an API key):
- Gemini (`publishers/google`): `:generateContent` and `:streamGenerateContent?alt=sse`,
  with the Gemini API's bodies, so FakeVertexGeminiServer reuses tests/fakes/gemini_server.py;
- Claude (`publishers/anthropic`): `:rawPredict` and `:streamRawPredict`, with
  Anthropic's Messages bodies less `model` (it is in the path) plus an
  `anthropic_version` (the SDK's own), so FakeVertexAnthropicServer reuses
  tests/fakes/anthropic_server.py.

Both also serve Google's OAuth token endpoint (`POST /token`, the JWT-bearer grant a
service account uses): a service-account key whose `token_uri` points here gets a
token the fake then accepts, so the real google-auth signing and refresh run.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.anthropic_server import FakeAnthropicServer, error_body
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.gemini_server import error_body as google_error_body

PROJECT = "ep-test-project"
ACCESS_TOKEN = "ya29.fake-static-access-token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class GoogleOAuth:
    """The token endpoint and the bearer check both Vertex fakes share."""

    def __init__(self) -> None:
        self.issued: set[str] = set()
        self.assertions: list[dict[str, Any]] = []  # the JWT claims each token request carried
        self.deny = False  # answer token requests as Google does for a disabled account or deleted key

    def valid(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        return token == ACCESS_TOKEN or token in self.issued

    async def token(self, request: Request) -> Response:
        form = await request.form()
        assertion = str(form.get("assertion", ""))
        if form.get("grant_type") != JWT_BEARER or assertion.count(".") != 2:
            return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT."}, 400)
        claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
        self.assertions.append(claims)
        if self.deny:
            return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400)
        token = "ya29.fake-issued-" + secrets.token_urlsafe(12)
        self.issued.add(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


def service_account_json(token_uri: str, email: str = "gateway@ep-test-project.iam.gserviceaccount.com") -> str:
    """A service-account key file with a fresh RSA key, its tokens minted at `token_uri`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": email, "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
    })


def _vertex_fields(fake, provider_id: int, name: str, kind: str, credential: str, overrides: dict) -> dict:
    fields: dict[str, Any] = dict(
        provider_id=provider_id, name=name, kind=kind, base_url=fake.vertex_base_url, credential=credential,
        read_timeout=10, connect_timeout=2, options={"project": PROJECT, "region": fake.location},
    )
    fields.update(overrides)
    return fields


class FakeVertexGeminiServer(FakeGeminiServer):
    kind = "vertex_gemini"
    location = "europe-west4"

    def __init__(self) -> None:
        super().__init__()
        self.oauth = GoogleOAuth()

    @property
    def vertex_base_url(self) -> str:
        return self.base_url + "/"

    def adapter_config(self, credential: str = ACCESS_TOKEN, **overrides: Any) -> AdapterConfig:
        return AdapterConfig(**_vertex_fields(self, 7501, "vertex", "vertex_gemini", credential, overrides))

    def build_app(self):
        app = super().build_app()
        path = "/{version}/projects/{project}/locations/{location}/publishers/google/models/{model_action}"
        app.router.routes[:] = [Route(path, self._vertex_call, methods=["POST"]),
                                Route("/token", self.oauth.token, methods=["POST"])]
        return app

    async def _vertex_call(self, request: Request) -> Response:
        params = request.path_params
        if (params["project"], params["location"]) != (PROJECT, self.location):
            self.record(request.url.path, dict(request.headers), None)
            return JSONResponse(google_error_body(404, f"Project {params['project']!r} not found."), 404)
        return await self._models_call(request)

    def _unauthenticated(self, request: Request) -> Response | None:
        if self.oauth.valid(request):
            return None
        message = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                   "cookie or other valid authentication credential.")
        return JSONResponse(google_error_body(401, message), 401)


class FakeVertexAnthropicServer(FakeAnthropicServer):
    kind = "vertex_anthropic"
    location = "us-east5"
    provider_id = 7601

    def __init__(self) -> None:
        super().__init__()
        self.oauth = GoogleOAuth()

    @property
    def vertex_base_url(self) -> str:
        return self.base_url + "/v1"

    def adapter_config(self, credential: str = ACCESS_TOKEN, **overrides: Any) -> AdapterConfig:
        return AdapterConfig(**_vertex_fields(self, self.provider_id, "vertex-claude", "vertex_anthropic",
                                              credential, overrides))

    def build_app(self):
        app = super().build_app()
        path = "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model_action}"
        app.router.routes[:] = [Route(path, self._raw_predict, methods=["POST"]),
                                Route("/token", self.oauth.token, methods=["POST"])]
        return app

    def _check_headers(self, request: Request) -> Response | None:
        if self.oauth.valid(request):
            return None
        return JSONResponse(google_error_body(401, "Request had invalid authentication credentials."), 401)

    async def _raw_predict(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        model, _, method = request.path_params["model_action"].partition(":")
        if method not in ("rawPredict", "streamRawPredict"):
            return JSONResponse(google_error_body(404, f"Method {method!r} not found."), 404)
        if not body.get("anthropic_version") or "model" in body:
            message = "anthropic_version is required in the body, and the model goes in the URL"
            return JSONResponse(error_body("invalid_request_error", message), 400)
        if bool(body.get("stream")) != (method == "streamRawPredict"):
            return JSONResponse(error_body("invalid_request_error", "stream must match the method"), 400)
        return await self._respond({**body, "model": model})
