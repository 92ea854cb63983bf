"""The real Claude Code CLI (bundled with claude-agent-sdk) works unchanged
against the platform: ANTHROPIC_BASE_URL points at the live gateway, the model
is a persona, and the persona's provider (a fake) answers.

The CLI runs under strace so the test sees every connection it opens and every
HTTP request line it writes: it must talk to the gateway on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import claude_agent_sdk
import pytest

from budgets.models import Usage
from tests.api.test_anthropic_endpoint import INPUT_PRICE, OUTPUT_PRICE, add_persona, add_provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

CLAUDE = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
STRACE = "/usr/bin/strace"
FAKES = {"anthropic": FakeAnthropicServer, "openai": FakeOpenAIServer, "gemini": FakeGeminiServer}
INET_CONNECT = re.compile(
    r"connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), "
    r'(?:inet_pton\(AF_INET6, |sin6?_addr=inet_addr\()"([^"]+)"'
)
REQUEST_LINE = re.compile(
    r'(?:sendto|write|writev|sendmsg)\(\d+, .*?"((?:GET|POST|HEAD|PUT|DELETE|OPTIONS) [^ ]+) HTTP'
)


@pytest.fixture(scope="module")
def fakes():
    servers = {kind: cls().start() for kind, cls in FAKES.items()}
    yield servers
    for server in servers.values():
        server.stop()


def run_claude(live, tmp_path: Path, *, model: str, auth: dict[str, str]) -> tuple[dict, str]:
    """One `claude -p` turn under strace; (its JSON result, the strace log)."""
    home = tmp_path / "home"
    home.mkdir()
    trace = tmp_path / "strace.txt"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": live.url,
        "ANTHROPIC_MODEL": model,
        # Background tasks (titles, summaries) use the small model: route it to the persona too.
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        **auth,
    }
    command = [
        STRACE,
        "-f",
        "-qq",
        "-s",
        "80",
        "-e",
        "trace=connect,sendto,write,writev,sendmsg",
        "-o",
        str(trace),
        str(CLAUDE),
        "-p",
        "Reply with one short greeting.",
        "--output-format",
        "json",
    ]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout), trace.read_text(errors="replace")


def gateway_port(live) -> str:
    return live.url.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    "kind, auth_variable",
    [
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("openai", "ANTHROPIC_AUTH_TOKEN"),
        ("gemini", "ANTHROPIC_API_KEY"),
    ],
)
def test_claude_code_completes_a_turn_through_a_persona(live, world, tmp_path, fakes, kind, auth_variable):
    fake = fakes[kind]
    fake.reset()
    fake.default_reply = FakeReply(text=f"Hello from the {kind} persona!", input_tokens=1500, output_tokens=9)
    add_persona("coder", (add_provider(kind, fake), fake.model))
    result, trace = run_claude(live, tmp_path, model="coder", auth={auth_variable: world.red_key})

    assert (result["is_error"], result["result"]) == (False, f"Hello from the {kind} persona!")
    row = Usage.objects.get()  # one turn, one call, one row
    assert (row.persona, row.provider, row.model, row.status, row.stream) == (
        "coder",
        kind,
        fake.model,
        "ok",
        True,
    )
    assert row.team == world.red and row.endpoint == "v1.messages"
    assert (row.input_tokens, row.output_tokens) == (1500, 9)
    # Claude Code marks cache_control breakpoints; they reach an Anthropic step, whose prompt cache is written.
    usage = result["usage"]
    written = usage["cache_creation_input_tokens"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] + written == 1500
    assert (written > 0) == (kind == "anthropic")
    # a cache write costs 1.25x the input price on Anthropic; the rest as plain input
    assert row.cost_usd == ((1500 - written) * INPUT_PRICE + written * INPUT_PRICE * Decimal("1.25")
                            + 9 * OUTPUT_PRICE) / 1_000_000
    assert result["usage"]["output_tokens"] == 9

    # The CLI's own request, converted, reached the provider: its tools and system prompt.
    sent = json.dumps(fake.requests[-1]["body"])
    assert "Bash" in sent and "Reply with one short greeting." in sent

    # It opened connections to the gateway only, and asked it for nothing but /v1/messages.
    connects = set(INET_CONNECT.findall(trace))
    assert connects == {(gateway_port(live), "127.0.0.1")}, connects
    assert REQUEST_LINE.findall(trace) == ["POST /v1/messages?beta=true"]


def test_claude_code_reports_a_refusal_from_the_gateway(live, world, tmp_path, fakes):
    result, trace = run_claude_failing(live, tmp_path, world.red_key)
    # The CLI reads our Anthropic-style 404 as Anthropic's own "no such model".
    assert (result["is_error"], result["api_error_status"]) == (True, 404)
    assert "issue with the selected model (nobody)" in result["result"]
    # It tries a stream first, then once more without streaming: two refusals, each on the ledger.
    rows = Usage.objects.order_by("created_at").values_list("stream", "status", "http_status", "error_code")
    assert list(rows) == [
        (True, "refused", 404, "model_not_found"),
        (False, "refused", 404, "model_not_found"),
    ]
    assert set(INET_CONNECT.findall(trace)) == {(gateway_port(live), "127.0.0.1")}


def run_claude_failing(live, tmp_path: Path, key: str) -> tuple[dict, str]:
    home, trace = tmp_path / "home", tmp_path / "strace.txt"
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": live.url,
        "ANTHROPIC_MODEL": "nobody",
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    command = [
        STRACE,
        "-f",
        "-qq",
        "-e",
        "trace=connect",
        "-o",
        str(trace),
        str(CLAUDE),
        "-p",
        "Hi",
        "--output-format",
        "json",
    ]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    return json.loads(done.stdout), trace.read_text(errors="replace")
