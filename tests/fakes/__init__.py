"""Wire-level fake providers. FAKES maps a provider kind to its harness class.

Every harness has the same surface, used by the conformance battery
(tests/providers/test_adapter_conformance.py):
    kind, model, scriptable, reports_reasoning_tokens, start(), stop(), reset(),
    script(*FakeReply|Fault), context_length_fault() -> Fault,
    adapter_config(credential=..., **overrides) -> providers.adapters.base.AdapterConfig,
    requests (what the provider received), call_count
"""

FAKES: dict[str, str] = {
    "demo": "tests.fakes.demo_harness.DemoHarness",
    "openai": "tests.fakes.openai_server.FakeOpenAIServer",
    "anthropic": "tests.fakes.anthropic_server.FakeAnthropicServer",
    "gemini": "tests.fakes.gemini_server.FakeGeminiServer",
    "claude_agent": "tests.fakes.claude_cli.FakeClaudeCLI",
    "azure_openai": "tests.fakes.azure_openai_server.FakeAzureOpenAIServer",
    "bedrock": "tests.fakes.bedrock_server.FakeBedrockServer",
    "vertex_gemini": "tests.fakes.vertex_server.FakeVertexGeminiServer",
    "vertex_anthropic": "tests.fakes.vertex_server.FakeVertexAnthropicServer",
}
