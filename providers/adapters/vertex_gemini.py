"""Gemini on Google Vertex AI, through the official `google-genai` SDK in Vertex mode.

The gemini adapter with another client: google-genai speaks the same
GenerateContent wire to Vertex (`.../projects/<p>/locations/<l>/publishers/google/
models/<model>:generateContent`), so the mapping is providers/adapters/gemini.py's.
What changes is the client: `vertexai=True`, the provider's `project` and
location (options `project`, `region`: the dashboard's one "Region or location"
field for every cloud kind), and Google credentials instead of an API key: a
service-account key file (the SDK refreshes its token, in a thread) or an access
token (providers/adapters/cloud_credentials.py).
"""

from __future__ import annotations

from google import genai

from providers.adapters.cloud_credentials import google_auth_failure, google_credentials
from providers.adapters.gemini import GeminiAdapter
from providers.types import Capabilities, ProviderError

DEFAULT_LOCATION = "us-central1"


class VertexGeminiAdapter(GeminiAdapter):
    kind = "vertex_gemini"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True,
        json_mode=True, json_schema=True, system_prompt=True,
        notes="Gemini on Google Vertex AI via google-genai (vertexai=True); tool call ids are generated "
              "when Gemini sends none.",
    )

    def _make_client(self) -> genai.Client | None:
        self._setup_error: str | None = None
        config, opts = self.config, self.config.options
        if not config.credential or not opts.get("project"):
            self._setup_error = "a Vertex AI provider needs a Google credential and a project"
            return None
        try:
            credentials = google_credentials(config.credential)
        except ValueError as exc:
            self._setup_error = str(exc)
            return None
        # base_url None: the SDK's regional endpoint, https://<location>-aiplatform.googleapis.com/
        return genai.Client(vertexai=True, credentials=credentials, project=opts["project"],
                            location=opts.get("region") or DEFAULT_LOCATION,  # Vertex calls it the location
                            http_options=self._http_options(config.base_url or None))

    def _error(self, exc: BaseException) -> ProviderError:
        failure = google_auth_failure(exc)
        if failure is None:
            return super()._error(exc)
        name = self.config.name or self.kind
        return ProviderError(failure[0], f"{name}: {failure[1]}", provider=name)  # type: ignore[arg-type]

    def _aio(self):
        if self._client is None:
            raise ProviderError("auth", f"{self.config.name or self.kind}: {self._setup_error}",
                                provider=self.config.name or self.kind)
        return self._client.aio
