"""The server-side tool loop (gateway/tool_loop.py) through the chat faces, with the
real SDKs against a live gateway: a persona with execute on calls a built-in tool on
each provider kind's fake, the platform runs it and the model answers; every model
call is a Usage row of the run, every tool call a ToolCallLog row."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from budgets.models import Budget
from providers.models import Model
from tests.api.tool_loop_support import KINDS, cost, fakes_running, rows, sdk, tool_rows, tooled_setup
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.streaming_support import chat_frame, frames_until_terminal, open_socket, wait_for
from tools.models import PersonaTools, ToolCallLog

ASK = [{"role": "user", "content": "What time is it?"}]


@pytest.fixture(scope="module")
def fakes():
    yield from fakes_running()


@pytest.fixture
def tooled(fakes, world):
    return tooled_setup(fakes, world)


def time_then_answer(fake, answer: str = "It is noon.") -> None:
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]), FakeReply(text=answer))


@pytest.mark.parametrize("kind", KINDS)
def test_the_platform_runs_the_tool_and_the_model_answers_on_every_provider(live, world, tooled, kind):
    fake = tooled[kind]
    time_then_answer(fake)
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(model=f"tools-{kind}", messages=ASK)
    completion = raw.parse()
    assert completion.choices[0].message.content == "It is noon."
    assert completion.choices[0].finish_reason == "stop" and not completion.choices[0].message.tool_calls
    run_id = raw.headers["x-ep-run-id"]
    assert run_id.startswith("run_")

    first, second = rows(run_id)  # one row per model call, the request's own first
    request_id = raw.headers["x-request-id"]
    assert (first.request_id, second.request_id) == (request_id, request_id + ".2")
    assert all(r.status == "ok" and r.provider == kind and r.persona == f"tools-{kind}" for r in (first, second))
    assert first.cost_usd == second.cost_usd == cost(12, 8)
    assert completion.usage.prompt_tokens == first.input_tokens + second.input_tokens
    assert Decimal(raw.headers["x-ep-cost-usd"]) == first.cost_usd + second.cost_usd

    [logged] = tool_rows(run_id)
    assert (logged.server, logged.tool, logged.status, logged.source) == ("builtin", "current_time", "ok", "loop")
    assert logged.request_id == request_id and logged.persona == f"tools-{kind}"

    offered, answered = (json.dumps(r["body"]) for r in fake.requests)
    assert "builtin__current_time" in offered and "builtin__run_cost" in offered
    year = logged.at.strftime("%Y-")  # the tool's answer, an ISO time, went back to the model
    assert year in answered and year not in offered


def test_the_anthropic_face_runs_the_loop_with_the_callers_run_id(live, world, tooled):
    fake = tooled["anthropic"]
    fake.script(FakeReply(text="Let me look.", tool_calls=[FakeToolCall("builtin__run_cost", {})]),
                FakeReply(text="The run has cost little."))
    client = anthropic.Anthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="tools-anthropic", max_tokens=200, messages=ASK,
                                                   extra_headers={"X-EP-Run-Id": "hive-run-42"})
    message = raw.parse()
    assert [b.text for b in message.content] == ["Let me look.\n\nThe run has cost little."]
    assert message.stop_reason == "end_turn" and raw.headers["x-ep-run-id"] == "hive-run-42"
    assert [r.status for r in rows("hive-run-42")] == ["ok", "ok"]
    [logged] = tool_rows("hive-run-42")
    assert logged.tool == "run_cost" and logged.status == "ok"
    # run_cost read the run's first model call, already on the ledger when the tool ran
    result = json.loads(_tool_result_text(fake.requests[1]["body"]))
    assert result["run_id"] == "hive-run-42" and result["model_calls"] == 1


def _tool_result_text(anthropic_body: dict) -> str:
    for message in anthropic_body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block.get("type") == "tool_result":
                content = block["content"]
                return content if isinstance(content, str) else content[0]["text"]
    raise AssertionError("no tool_result sent")


def test_the_native_endpoint_answers_with_the_run_and_the_loops_usage(live, world, tooled):
    time_then_answer(tooled["gemini"], "Noon, UTC.")
    response = httpx.post(live.url + "/api/v1/chat", headers={"Authorization": f"Bearer {world.red_key}"},
                          json={"persona": "tools-gemini", "messages": ASK,
                                "metadata": {"run_id": "wf-9", "step": "plan"}}, timeout=20)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "Noon, UTC." and body["run_id"] == "wf-9"
    both = rows("wf-9")
    assert [r.step for r in both] == ["plan", "plan"]
    assert Decimal(body["usage"]["cost_usd"]) == sum(r.cost_usd for r in both)


def test_a_tool_error_goes_back_to_the_model_and_the_loop_goes_on(live, world, tooled):
    fake = tooled["openai"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__run_cost", {"run_id": 5}),
                                               FakeToolCall("builtin__no_such_tool", {})]),
                FakeReply(text="I could not read the cost."))
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(model="tools-openai", messages=ASK)
    assert raw.status_code == 200 and raw.parse().choices[0].message.content == "I could not read the cost."
    run_id = raw.headers["x-ep-run-id"]
    assert [(t.tool, t.status, t.error_code) for t in tool_rows(run_id)] == [
        ("run_cost", "refused", "invalid_arguments"), ("no_such_tool", "refused", "unknown_tool")]
    results = [m for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert "do not match the tool's schema" in results[0]["content"]
    assert "no tool named 'builtin__no_such_tool'" in results[1]["content"]


@pytest.mark.parametrize(("caps", "code"), [
    ({"max_steps": 1}, "tool_steps_exceeded"),
    ({"max_cost_usd": Decimal("0.00001")}, "tool_cost_exceeded"),
    ({"max_tool_seconds": 0}, "tool_time_exceeded"),
])
def test_a_cap_ends_the_loop_with_its_own_error_and_row(live, world, tooled, caps, code):
    PersonaTools.objects.filter(persona__slug="tools-openai").update(**caps)
    fake = tooled["openai"]
    fake.script(*[FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})])] * 3)
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK,
                                                         extra_headers={"X-EP-Run-Id": f"capped-{code}"})
    error = raised.value.body
    assert error["code"] == code and error["type"] == "tool_loop_error"
    assert "persona's max_" in error["message"]
    ledger = rows(f"capped-{code}")
    assert [(r.status, r.error_code) for r in ledger] == [("ok", ""), ("refused", code)]
    assert ledger[1].cost_usd == 0 and ledger[1].request_id == ledger[0].request_id + ".2"
    assert fake.call_count == 1
    assert tool_rows(f"capped-{code}") == []  # the loop stopped before running the tools it could not use


def test_a_budget_refuses_a_later_model_call_of_the_loop(live, world, tooled):
    Budget.objects.create(name="red tight", scope="team", team=world.red, period="day", limit_usd=Decimal("0.5"))
    fake = tooled["openai"]
    # the first call fits the budget's reservation, then reports a costly answer ($1)
    fake.script(FakeReply(text="", output_tokens=500_000, tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="never sent"))
    with pytest.raises(openai.RateLimitError) as raised:
        sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK, max_tokens=50,
                                                         extra_headers={"X-EP-Run-Id": "over-budget"})
    assert raised.value.body["code"] == "budget_exceeded" and "red tight" in raised.value.body["message"]
    assert [(r.status, r.error_code) for r in rows("over-budget")] == [("ok", ""), ("refused", "budget_exceeded")]
    assert [t.status for t in tool_rows("over-budget")] == ["ok"] and fake.call_count == 1


def test_a_request_sending_its_own_tools_to_an_executing_persona_is_refused(live, world, tooled):
    tool = {"type": "function", "function": {"name": "mine", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK, tools=[tool])
    assert raised.value.body["code"] == "client_tools_not_supported"
    assert tooled["openai"].call_count == 0


def test_a_team_without_a_grant_gets_a_plain_answer(live, world, tooled):
    tooled["openai"].script(FakeReply(text="No tools here."))
    raw = sdk(live, world.blue_key).chat.completions.with_raw_response.create(model="tools-openai", messages=ASK)
    assert raw.parse().choices[0].message.content == "No tools here." and "x-ep-run-id" not in raw.headers
    assert "tools" not in tooled["openai"].requests[0]["body"] and not ToolCallLog.objects.exists()


def test_a_persona_with_execute_off_returns_tool_calls_to_the_caller(live, world, tooled):
    PersonaTools.objects.filter(persona__slug="tools-openai").update(execute=False)
    tooled["openai"].script(FakeReply(text="plain"))
    answer = sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK)
    assert answer.choices[0].message.content == "plain" and "tools" not in tooled["openai"].requests[0]["body"]


# -- streams -----------------------------------------------------------------------------------


def test_a_streamed_loop_reads_as_a_plain_stream_in_the_openai_sdk(live, world, tooled):
    fake = tooled["anthropic"]
    fake.script(FakeReply(text="Checking.", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="It is noon."))
    with sdk(live, world.red_key).chat.completions.with_streaming_response.create(
            model="tools-anthropic", messages=ASK, stream=True, stream_options={"include_usage": True}) as raw:
        run_id = raw.headers["x-ep-run-id"]
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking.\n\nIt is noon."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    ledger = rows(run_id)
    assert len(ledger) == 2 and all(r.status == "ok" and r.stream for r in ledger)
    assert chunks[-1].usage.completion_tokens == sum(r.output_tokens for r in ledger)


def test_the_chat_stream_carries_tool_progress_as_sse_comments(live, world, tooled):
    time_then_answer(tooled["openai"])
    lines = _stream_lines(live, world, "/v1/chat/completions", {"model": "tools-openai", "messages": ASK,
                                                                 "stream": True})
    progress = [json.loads(line.removeprefix(": ep-tool ")) for line in lines if line.startswith(": ep-tool ")]
    assert [p["type"] for p in progress] == ["tool_started", "tool_finished"]
    started, finished = progress
    assert started["name"] == "builtin__current_time" and started["arguments"] == "{}" and started["step"] == 1
    assert finished["status"] == "ok" and finished["call_id"] == started["call_id"]
    assert finished["run_id"].startswith("run_") and finished["output_bytes"] > 0
    assert lines[-1] == "data: [DONE]"


def test_the_native_stream_has_tool_events_between_model_calls(live, world, tooled):
    time_then_answer(tooled["gemini"])
    lines = _stream_lines(live, world, "/api/v1/chat", {"persona": "tools-gemini", "messages": ASK, "stream": True})
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events[:2] == ["tool_started", "tool_finished"] and events[-1] == "done"
    assert "delta" in events and "tool_call" not in events


def _stream_lines(live, world, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", live.url + path, headers={"Authorization": f"Bearer {world.red_key}"}, json=body,
                      timeout=20) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_the_websocket_sends_tool_frames_and_the_run_id(live, world, tooled):
    time_then_answer(tooled["openai"], "Noon.")

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("t1", "tools-openai", "What time is it?"))
            return await frames_until_terminal(ws, {"t1"})

    frames = asyncio.run(scenario())
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["tool_started", "tool_finished"] and kinds[-1] == "done"
    run_id = frames[0]["run_id"]
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == "Noon."
    assert [(r.endpoint, r.status) for r in rows(run_id)] == [("ws.chat", "ok"), ("ws.chat", "ok")]
    assert frames[-1]["usage"]["output_tokens"] == sum(r.output_tokens for r in rows(run_id))


def test_a_cap_reached_after_text_was_streamed_ends_the_stream_with_the_error(live, world, tooled):
    PersonaTools.objects.filter(persona__slug="tools-openai").update(max_steps=1)
    tooled["openai"].script(FakeReply(text="Checking.", tool_calls=[FakeToolCall("builtin__current_time", {})]))
    stream = sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK, stream=True,
                                                              extra_headers={"X-EP-Run-Id": "cut-run"})
    text = ""
    with pytest.raises(openai.APIError, match="limit of 1 model calls"):
        for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "Checking."
    assert [(r.status, r.error_code) for r in rows("cut-run")] == [("ok", ""), ("refused", "tool_steps_exceeded")]


def test_the_anthropic_sdk_streams_a_loop_and_skips_the_progress_comments(live, world, tooled):
    time_then_answer(tooled["gemini"], "It is noon in Oslo.")
    client = anthropic.Anthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    with client.messages.stream(model="tools-gemini", max_tokens=200, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "It is noon in Oslo." and final.stop_reason == "end_turn"
    assert [block.type for block in final.content] == ["text"]
    assert ToolCallLog.objects.get().status == "ok"


def test_a_route_whose_model_takes_no_tools_is_refused_before_any_call(live, world, tooled):
    Model.objects.filter(provider__name="openai").update(supports_tools=False)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(live, world.red_key).chat.completions.create(model="tools-openai", messages=ASK)
    assert raised.value.body["code"] == "tools_not_supported" and tooled["openai"].call_count == 0


def test_a_client_leaving_mid_loop_leaves_the_model_call_in_flight_its_row(live, world, tooled):
    tooled["openai"].script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                            Fault("stall", seconds=10))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.url + "/v1/chat/completions", timeout=2,
                   headers={"Authorization": f"Bearer {world.red_key}", "X-EP-Run-Id": "left-run"},
                   json={"model": "tools-openai", "messages": ASK})
    ledger = wait_for(lambda: len(rows("left-run")) == 2 and rows("left-run"), timeout=10)
    assert [(r.status, r.http_status) for r in ledger] == [("ok", 200), ("cancelled", 499)]
    assert ledger[1].request_id == ledger[0].request_id + ".2"
