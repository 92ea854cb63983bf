"""exec: run one of the commands an operator allow-listed, never anything else.

Off by default. The operator lists the commands on the built-in ToolServer row:

    options = {"exec": {"enabled": true, "timeout_seconds": 10, "max_output_bytes": 20000,
               "commands": {"git_status": ["git", "status"],
                            "grep_docs": {"argv": ["grep", "-rn", "--"], "allow_args": true, "cwd": "/srv/docs"}}}}

A command is an argv list, run without a shell, with a minimal environment,
no stdin, in its own process group (killed whole at the time cap). The model
adds arguments only to a command whose entry says allow_args; arguments that
look like options (a leading '-') only where allow_options says so too, since
options are how most programs run other programs (git -c, find -exec).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

from tools.servers.builtin import builtin_tool, server_options
from tools.types import ToolContext, ToolError, ToolResult

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_OUTPUT = 20_000
MAX_ARGS = 20
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class Allowed:
    argv: list[str]
    allow_args: bool = False
    allow_options: bool = False
    cwd: str | None = None


def allowed_commands(options: dict[str, Any]) -> dict[str, Allowed]:
    """The allow-list from the server's exec options; malformed entries are left out."""
    found: dict[str, Allowed] = {}
    for name, entry in (options.get("commands") or {}).items():
        if isinstance(entry, list):
            entry = {"argv": entry}
        argv = entry.get("argv") if isinstance(entry, dict) else None
        if isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv):
            found[str(name)] = Allowed(argv, bool(entry.get("allow_args")), bool(entry.get("allow_options")),
                                       entry.get("cwd") if isinstance(entry.get("cwd"), str) else None)
    return found


@builtin_tool(
    "exec",
    "Run one of the commands the operator allow-listed (by its name, e.g. 'git_status'), with extra arguments "
    "where that command allows them. Returns the exit code and the output. No shell: pipes, globs and $VARS "
    "are not interpreted.",
    {"command": {"type": "string", "minLength": 1, "maxLength": 100, "description": "The allow-listed name."},
     "args": {"type": "array", "items": {"type": "string", "maxLength": 1000}, "maxItems": MAX_ARGS,
              "description": "Arguments appended to the command, if it allows any."}},
    required=("command",),
)
async def exec_command(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    options = server_options(server, "exec")
    if not options.get("enabled"):
        raise ToolError("exec is turned off on this platform (an operator enables it on the built-in tool "
                        "server, with a list of allowed commands).", code="exec_disabled")
    commands = allowed_commands(options)
    allowed = commands.get(arguments["command"])
    if allowed is None:
        raise ToolError(f"'{arguments['command']}' is not an allowed command. Allowed: "
                        f"{', '.join(sorted(commands)) or 'none'}.", code="command_not_allowed")
    argv = allowed.argv + _checked_args(arguments.get("args") or [], allowed, arguments["command"])
    timeout = float(options.get("timeout_seconds", DEFAULT_TIMEOUT))
    limit = int(options.get("max_output_bytes", DEFAULT_MAX_OUTPUT))
    code, output, truncated = await _run(argv, allowed.cwd, timeout, limit)
    data = {"command": arguments["command"], "exit_code": code, "truncated": truncated}
    return ToolResult(f"{json.dumps(data)}\n\n{output}", is_error=code != 0, error_code="" if code == 0 else
                      "nonzero_exit", structured={**data, "output": output})


def _checked_args(args: list[str], allowed: Allowed, name: str) -> list[str]:
    if args and not allowed.allow_args:
        raise ToolError(f"The command '{name}' takes no arguments.", code="invalid_arguments")
    if not allowed.allow_options and any(arg.startswith("-") for arg in args):
        raise ToolError(f"The command '{name}' takes no options (arguments starting with '-').",
                        code="invalid_arguments")
    if any("\x00" in arg for arg in args):
        raise ToolError("Arguments may not contain NUL characters.", code="invalid_arguments")
    return args


async def _run(argv: list[str], cwd: str | None, timeout: float, limit: int) -> tuple[int, str, bool]:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=ENVIRONMENT, cwd=cwd, start_new_session=True)
    except OSError as exc:
        raise ToolError(f"The command could not start: {exc.strerror}.", code="exec_failed") from None
    try:
        output, truncated = await asyncio.wait_for(_read_capped(process, limit), timeout)
        code = await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        raise ToolError(f"The command did not finish within {timeout:g} s and was stopped.",
                        code="tool_timeout") from None
    except asyncio.CancelledError:  # the registry's own time cap, or the caller went away
        _kill_group(process)
        raise
    return code, output.decode(errors="replace"), truncated


async def _read_capped(process: asyncio.subprocess.Process, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of output; the rest is read and dropped so the command is not blocked on a full pipe."""
    kept, truncated = bytearray(), False
    while chunk := await process.stdout.read(65536):
        room = limit - len(kept)
        if len(chunk) > room:
            truncated = True
        kept += chunk[:max(room, 0)]
    return bytes(kept), truncated


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
