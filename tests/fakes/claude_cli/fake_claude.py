"""A fake Claude CLI speaking the stream-json protocol claude-agent-sdk drives.

Stdlib only; it never opens a socket. Run by the launcher FakeClaudeCLI writes
(tests/fakes/claude_cli.py), which sets STATE_DIR, holding:
  script.json  the queue of scripted replies/faults (popped under script.lock)
  default.json the reply used when the queue is empty
  log.jsonl    what each run received: argv, env names, stdin lines, exit

Protocol, as the SDK's Query/transport expect it: answer the `initialize`
control_request; talk to SDK MCP servers named in --mcp-config through
`mcp_message` control requests; read the user message; emit system/init,
stream_event frames (with --include-partial-messages), assistant messages (one
per content block, as the real CLI does), then a `result` with usage and
total_cost_usd. Tool calls go through the PreToolUse hook (which may "defer")
and then the `can_use_tool` permission prompt, like the real CLI.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import sys
import threading
import time
import uuid

STATE_DIR = globals().get("STATE_DIR") or os.environ.get("FAKE_CLAUDE_STATE_DIR", ".")
VERSION = "2.1.260"
PRICE_IN, PRICE_OUT = 3e-6, 15e-6  # what the fake "charges" per token
ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
              503: "overloaded_error", 529: "overloaded_error"}

SESSION = str(uuid.uuid4())
inbox: queue.Queue = queue.Queue()
exit_code = 0


# -- log and script ------------------------------------------------------------


def log(**record) -> None:
    record.update(pid=os.getpid(), at=time.time())
    with open(os.path.join(STATE_DIR, "log.jsonl"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")


def pop_script() -> dict:
    with open(os.path.join(STATE_DIR, "script.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent CLIs pop different items
        path = os.path.join(STATE_DIR, "script.json")
        items = json.load(open(path)) if os.path.exists(path) else []
        if items:
            item = items.pop(0)
            with open(path, "w") as f:
                json.dump(items, f)
            return item
    return json.load(open(os.path.join(STATE_DIR, "default.json")))


# -- stdin / stdout --------------------------------------------------------------


def emit(obj) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


def read_stdin() -> None:
    """Reader thread: stdin EOF ends the process, as it ends the real CLI's input."""
    for line in sys.stdin:
        if line.strip():
            log(event="stdin", line=json.loads(line))
            inbox.put(json.loads(line))
    log(event="exit", reason="stdin closed", code=exit_code)
    sys.stdout.flush()
    os._exit(exit_code)


def next_input(kind: str, request_id: str | None = None) -> dict:
    """The next stdin message of `kind` (a control_response for request_id)."""
    held = []
    while True:
        msg = inbox.get()
        if msg.get("type") == kind and (request_id is None or msg["response"]["request_id"] == request_id):
            for m in held:
                inbox.put(m)
            return msg
        held.append(msg)


_req = 0


def control(request: dict) -> dict:
    """Send a control_request to the SDK and wait for its answer."""
    global _req
    _req += 1
    rid = f"cli_req_{_req}"
    emit({"type": "control_request", "request_id": rid, "request": request})
    response = next_input("control_response", rid)["response"]
    return response.get("response") or {"error": response.get("error")}


# -- argv ------------------------------------------------------------------------


def flag(name: str, default=None):
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def mcp_tools() -> list[str]:
    """Handshake with each SDK MCP server and list its tools, as the CLI does at start."""
    config = json.loads(flag("--mcp-config") or "{}").get("mcpServers", {})
    names = []
    for server, spec in config.items():
        if spec.get("type") != "sdk":
            continue
        call = lambda method, params, i: control(  # noqa: E731
            {"subtype": "mcp_message", "server_name": server,
             "message": {"jsonrpc": "2.0", "id": i, "method": method, "params": params}})
        call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "claude-code", "version": VERSION}}, 0)
        listed = call("tools/list", {}, 1).get("mcp_response", {}).get("result", {}).get("tools", [])
        names += [f"mcp__{server}__{t['name']}" for t in listed]
    return names


# -- replies ---------------------------------------------------------------------


def assistant(content: dict, msg_id: str, stop_reason=None) -> dict:
    return {"type": "assistant", "parent_tool_use_id": None, "session_id": SESSION, "uuid": str(uuid.uuid4()),
            "message": {"id": msg_id, "type": "message", "role": "assistant", "model": flag("--model", "claude"),
                        "content": [content], "stop_reason": stop_reason, "usage": {}}}


def partial(event: dict) -> None:
    if flag("--include-partial-messages") is not None:
        emit({"type": "stream_event", "uuid": str(uuid.uuid4()), "session_id": SESSION,
              "parent_tool_use_id": None, "event": event})


def stream_text(reply: dict, chunks: list[str]) -> None:
    partial({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    for chunk in chunks:
        partial({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}})
        time.sleep(reply.get("chunk_delay") or 0)


def chunks_of(reply: dict) -> list[str]:
    n = max(1, reply.get("chunk_size") or 4)
    return [reply["text"][i:i + n] for i in range(0, len(reply["text"]), n)]


def usage(reply: dict) -> dict:
    cached = reply.get("cached_tokens", 0)
    return {"input_tokens": reply["input_tokens"] - cached, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0, "output_tokens": reply["output_tokens"]}


def result(reply: dict | None, **fields) -> None:
    u = usage(reply) if reply else {"input_tokens": 0, "output_tokens": 0}
    cost = (reply["input_tokens"] * PRICE_IN + reply["output_tokens"] * PRICE_OUT) if reply else 0.0
    emit({"type": "result", "subtype": "success", "is_error": False, "duration_ms": 5, "duration_api_ms": 4,
          "num_turns": 1, "session_id": SESSION, "total_cost_usd": round(cost, 8), "usage": u,
          "uuid": str(uuid.uuid4()), **fields})


def answer(reply: dict) -> None:
    msg_id = "msg_" + uuid.uuid4().hex[:20]
    partial({"type": "message_start", "message": {"id": msg_id, "type": "message", "role": "assistant",
                                                  "content": [], "model": flag("--model", "claude")}})
    if reply["text"]:
        stream_text(reply, chunks_of(reply))
        partial({"type": "content_block_stop", "index": 0})
        emit(assistant({"type": "text", "text": reply["text"]}, msg_id))
    uses = []
    for i, call in enumerate(reply.get("tool_calls") or []):
        use = {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
               "name": f"mcp__client__{call['name']}", "input": call["arguments"]}
        partial({"type": "content_block_start", "index": i + 1, "content_block": {**use, "input": {}}})
        partial({"type": "content_block_delta", "index": i + 1,
                 "delta": {"type": "input_json_delta", "partial_json": json.dumps(use["input"])}})
        partial({"type": "content_block_stop", "index": i + 1})
        emit(assistant(use, msg_id))
        uses.append(use)
    stop = "tool_use" if uses else ("max_tokens" if reply.get("finish") == "length" else "end_turn")
    partial({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": reply["output_tokens"]}})
    partial({"type": "message_stop"})
    if uses:
        return run_tools(reply, uses)
    result(reply, result=reply["text"], stop_reason=stop)


def run_tools(reply: dict, uses: list[dict]) -> None:
    """PreToolUse hook, then the permission prompt, for each call in turn."""
    for use in uses:
        decision = pre_tool_use(use)
        if decision == "defer":
            return result(reply, stop_reason="tool_deferred", terminal_reason="tool_deferred",
                          deferred_tool_use={"id": use["id"], "name": use["name"], "input": use["input"]})
        if flag("--permission-prompt-tool") == "stdio":
            answer_ = control({"subtype": "can_use_tool", "tool_name": use["name"], "input": use["input"],
                               "tool_use_id": use["id"], "permission_suggestions": []})
            log(event="permission", tool=use["name"], answer=answer_)
            if answer_.get("behavior") == "deny" and answer_.get("interrupt"):
                return result(reply, subtype="error_during_execution", is_error=True,
                              terminal_reason="aborted_tools", errors=["interrupted"])
    result(reply, result="", stop_reason="tool_use")


def pre_tool_use(use: dict) -> str | None:
    for matcher in HOOKS.get("PreToolUse") or []:
        if re.fullmatch(matcher.get("matcher") or ".*", use["name"]):
            for cid in matcher["hookCallbackIds"]:
                out = control({"subtype": "hook_callback", "callback_id": cid, "tool_use_id": use["id"],
                               "input": {"hook_event_name": "PreToolUse", "tool_name": use["name"],
                                         "tool_input": use["input"], "tool_use_id": use["id"],
                                         "session_id": SESSION}})
                log(event="hook", tool=use["name"], answer=out)
                decision = (out.get("hookSpecificOutput") or {}).get("permissionDecision")
                if decision:
                    return decision
    return None


# -- faults ----------------------------------------------------------------------


def fault(item: dict) -> None:
    global exit_code
    kind = item["kind"]
    if kind == "status":
        return status_error(item)
    if kind == "stall":
        time.sleep(item["seconds"])
        return result(None, result="")
    if kind == "malformed":
        emit('{"type": "assistant", "message": {"content": [')  # cut mid-JSON
        exit_code = 1
        return
    reply = item.get("reply") or json.load(open(os.path.join(STATE_DIR, "default.json")))
    partial({"type": "message_start", "message": {"id": "msg_cut", "content": []}})
    stream_text(reply, chunks_of(reply)[: item["after_chunks"]])
    if kind == "stall_stream":
        time.sleep(item["seconds"])
        return
    log(event="exit", reason="cut", code=3)
    sys.stdout.flush()
    os._exit(3)  # "cut": the process dies mid-answer


def status_error(item: dict) -> None:
    global exit_code
    status = item["status"]
    if item.get("error_type") == "prompt_too_long":
        text = "Prompt is too long"  # the CLI's own words for a context overflow
    else:
        error = {"type": item.get("error_type") or ERROR_TYPE.get(status, "api_error"), "message": item["message"]}
        text = f"API Error: {status} " + json.dumps({"type": "error", "error": error})
    if status == 429 and item.get("retry_after") is not None:
        # What the CLI reports when a limit is hit: when it resets.
        emit({"type": "rate_limit_event", "uuid": str(uuid.uuid4()), "session_id": SESSION,
              "rate_limit_info": {"status": "rejected", "resetsAt": time.time() + item["retry_after"],
                                  "rateLimitType": "five_hour"}})
    result(None, is_error=True, result=text, api_error_status=status)
    exit_code = 1


# -- main ------------------------------------------------------------------------

HOOKS: dict = {}


def main() -> None:
    env = {k: ("<set>" if k == "ANTHROPIC_API_KEY" else None) for k in os.environ}
    log(event="start", argv=sys.argv[1:], env_names=sorted(env), cwd=os.getcwd(),
        anthropic_base_url=os.environ.get("ANTHROPIC_BASE_URL"))
    threading.Thread(target=read_stdin, daemon=True).start()
    init = next_input("control_request")
    HOOKS.update(init["request"].get("hooks") or {})
    emit({"type": "control_response", "response": {"subtype": "success", "request_id": init["request_id"],
                                                   "response": {"commands": [], "models": [], "pid": os.getpid()}}})
    tools = mcp_tools()
    next_input("user")
    emit({"type": "system", "subtype": "init", "session_id": SESSION, "uuid": str(uuid.uuid4()),
          "claude_code_version": VERSION, "model": flag("--model", "claude"), "tools": tools,
          "permissionMode": flag("--permission-mode", "default"), "cwd": os.getcwd(),
          "mcp_servers": [{"name": "client", "status": "connected"}] if tools else []})
    item = pop_script()
    log(event="script", item=item)
    if "kind" in item:
        fault(item)
    else:
        answer(item)
    # Like the real CLI in stream-json input mode: stay until stdin closes.
    time.sleep(30)
    os._exit(exit_code)


if __name__ == "__main__":
    main()
