"""Azure OpenAI through the official `openai` SDK's Azure client (`AsyncAzureOpenAI`).

The openai adapter with another client: the wire is Chat Completions, so the
mapping (`request_to_wire`, `result_from_wire`, `StreamState`, `error_from_sdk`)
is providers/adapters/openai.py's, unchanged. What Azure changes is where and how
a call goes, and that is the client's job:
- the base URL is the resource's endpoint (`https://<resource>.openai.azure.com`);
  the SDK adds `/openai/deployments/<model>/...`, so a route step's model is the
  Azure *deployment* name;
- every call carries `?api-version=` (options `api_version`, default below);
- the credential is an API key (sent as `api-key`) or, with options
  `credential_type: "entra_token"`, a Microsoft Entra ID access token (sent as
  `Authorization: Bearer`). An Entra token expires (about an hour): the operator
  replaces it, or puts the gateway behind a key.
"""

from __future__ import annotations

import openai

from providers.adapters.openai import OpenAIAdapter
from providers.types import Capabilities

# The newest GA data-plane version when this adapter was written; a provider sets its own.
DEFAULT_API_VERSION = "2024-10-21"
CREDENTIAL_TYPES = ("api_key", "entra_token")


class AzureOpenAIAdapter(OpenAIAdapter):
    kind = "azure_openai"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True, json_mode=True, json_schema=True,
        embeddings=True, logprobs=True, strict_tools=True,
        notes="Azure OpenAI deployments (the model is the deployment name) via the openai SDK's Azure client.",
    )

    def _make_client(self) -> openai.AsyncAzureOpenAI:
        config, opts = self.config, self.config.options
        # The empty-string placeholders keep the SDK from reading AZURE_OPENAI_API_KEY /
        # AZURE_OPENAI_AD_TOKEN from the process env: only this provider's credential is sent.
        auth = ({"azure_ad_token": config.credential or "no-token"}
                if opts.get("credential_type") == "entra_token" else {"api_key": config.credential or "no-key"})
        return openai.AsyncAzureOpenAI(
            # An Azure resource has no shared public endpoint: the form requires a base URL.
            azure_endpoint=config.base_url or "https://invalid.openai.azure.com",
            api_version=opts.get("api_version") or DEFAULT_API_VERSION,
            default_headers=opts.get("default_headers"),
            **auth,
            **self._client_transport(),
        )
