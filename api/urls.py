"""The NinjaAPI: every HTTP face of the platform mounted in one place, with
its error handlers installed once (api/errors.py). OpenAPI at /api/openapi.json."""

from __future__ import annotations

from ninja import NinjaAPI

from api import (
    anthropic_compat,
    capabilities,
    costs,
    errors,
    health,
    metrics,
    models,
    native,
    openai_batches,
    openai_compat,
    openai_completions,
    openai_embeddings,
    openai_files,
    openai_responses,
    runs,
    tool_discovery,
)

api = NinjaAPI(
    title="Execution Platform",
    version="1.0",
    description="One API for every LLM provider, routed by persona, with budgets and cost tracking.",
    openapi_url="/api/openapi.json",
    docs_url="/api/docs",
    urls_namespace="api",
)
api.add_router("/v1", openai_compat.router)  # OpenAI clients
api.add_router("/v1", openai_responses.router)  # the Responses API (api/openai_responses.py)
api.add_router("/v1", openai_embeddings.router)
api.add_router("/v1", openai_completions.router)  # the legacy text completions
api.add_router("/v1", openai_files.router)  # batch input and results files
api.add_router("/v1", openai_batches.router)  # batch jobs, run by `manage.py run_batches`
api.add_router("/v1", models.router)  # OpenAI and Anthropic SDKs both list models here
api.add_router("/v1", anthropic_compat.router)  # Claude SDKs and Claude Code
api.add_router("/api/v1", native.router)  # Hive's native chat, JSON or SSE
api.add_router("/api/v1/runs", runs.router)  # workflow runs: what each run's steps cost
api.add_router("/api/v1", tool_discovery.router)  # GET /api/v1/tools (the MCP face is /mcp: api/mcp_server.py)
api.add_router("", health.router)
api.add_router("", capabilities.router)
api.add_router("", costs.router)
api.add_router("", metrics.router)  # GET /metrics for Prometheus
errors.install(api)
