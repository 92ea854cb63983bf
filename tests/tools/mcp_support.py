"""Helpers for tests of external MCP servers: the fakes (tests/fakes/mcp_*) as
ToolServer rows, and a key whose team may use them."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from tools.models import ToolServer
from tools.server_config import secrets_encrypt

STDIO_FAKE = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_stdio_server.py")


def http_server_row(url: str, name: str = "fakehttp", **fields) -> ToolServer:
    headers = fields.pop("headers", None)
    return ToolServer.objects.create(name=name, kind="http", url=url,
                                     secrets_encrypted=secrets_encrypt(headers or {}), **fields)


def stdio_server_row(name: str = "fakestdio", env: dict[str, str] | None = None, **fields) -> ToolServer:
    return ToolServer.objects.create(name=name, kind="stdio", command=[sys.executable, STDIO_FAKE],
                                     secrets_encrypted=secrets_encrypt(env or {}), **fields)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a server that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp"
