"""The tool loop on the Responses API, through the openai SDK: a persona that runs its
tools answers with mcp_call items; `tools: [{"type": "mcp", ...}]` names a tool
server registered here (never a URL of the caller's choosing), listed as an
mcp_list_tools item; streams carry OpenAI's mcp_call events."""

from __future__ import annotations

import json

import openai
import pytest

from tests.api.tool_loop_support import fakes_running, rows, sdk, tool_rows, tooled_persona, tooled_setup
from tests.fakes.common import FakeReply, FakeToolCall

BUILTIN = {"type": "mcp", "server_label": "builtin", "require_approval": "never"}


@pytest.fixture(scope="module")
def fakes():
    yield from fakes_running()


@pytest.fixture
def tooled(fakes, world):
    return tooled_setup(fakes, world)


def test_a_persona_that_runs_tools_answers_with_mcp_call_items(live, world, tooled):
    fake = tooled["anthropic"]
    fake.script(FakeReply(text="Looking.", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="It is noon."))
    raw = sdk(live, world.red_key).responses.with_raw_response.create(model="tools-anthropic", input="Time?")
    response = raw.parse()
    assert [item.type for item in response.output] == ["message", "mcp_call", "message"]
    call = response.output[1]
    assert (call.server_label, call.name, call.arguments, call.status) == ("builtin", "current_time", "{}",
                                                                           "completed")
    assert call.output.startswith(tool_rows(raw.headers["x-ep-run-id"])[0].at.strftime("%Y-"))
    assert response.output_text == "Looking.It is noon."
    assert response.usage.input_tokens == sum(r.input_tokens for r in rows(raw.headers["x-ep-run-id"]))


def test_an_mcp_tool_names_a_registered_server_and_narrows_its_tools(live, world, tooled):
    fake = tooled["gemini"]
    tooled_persona("gemini", fake, slug="plain-gemini", execute=False)
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="Noon."))
    response = sdk(live, world.red_key).responses.create(
        model="plain-gemini", input="Time?", tools=[{**BUILTIN, "allowed_tools": ["current_time"]}],
        metadata={"run_id": "mcp-run"})
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    listed = response.output[0]
    assert listed.server_label == "builtin" and [t.name for t in listed.tools] == ["current_time"]
    assert response.output[1].status == "completed" and response.output_text == "Noon."
    offered = json.dumps(fake.requests[0]["body"])
    assert "builtin__current_time" in offered and "builtin__run_cost" not in offered
    assert [r.status for r in rows("mcp-run")] == ["ok", "ok"]
    assert [t.tool for t in tool_rows("mcp-run")] == ["current_time"]
    # the echoed tools say what was asked, nothing more
    assert response.tools[0].type == "mcp" and response.tools[0].server_label == "builtin"


@pytest.mark.parametrize(("tool", "code"), [
    ({**BUILTIN, "server_url": "http://169.254.169.254/latest"}, "mcp_server_url_mismatch"),
    ({**BUILTIN, "require_approval": "always"}, "mcp_approval_not_supported"),
    ({**BUILTIN, "require_approval": {"always": {"tool_names": ["current_time"]}}}, "mcp_approval_not_supported"),
    ({**BUILTIN, "server_label": "elsewhere"}, "unknown_mcp_server"),
    ({**BUILTIN, "allowed_tools": ["rm_rf"]}, "unknown_tool"),
    ({**BUILTIN, "authorization": "secret-token"}, "mcp_credentials_not_accepted"),
])
def test_an_mcp_tool_the_gateway_cannot_honour_is_refused_by_name(live, world, tooled, tool, code):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(live, world.red_key).responses.create(model="tools-openai", input="Time?", tools=[tool])
    assert raised.value.body["code"] == code
    assert "secret-token" not in json.dumps(raised.value.body)
    assert tooled["openai"].call_count == 0


def test_a_key_without_a_grant_cannot_name_the_server(live, world, tooled):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(live, world.blue_key).responses.create(model="tools-openai", input="Time?", tools=[BUILTIN])
    assert raised.value.body["code"] == "unknown_mcp_server"


def test_a_streamed_response_shows_the_tool_call_as_openai_mcp_events(live, world, tooled):
    time_reply = FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})])
    tooled["openai"].script(time_reply, FakeReply(text="It is noon."))
    with sdk(live, world.red_key).responses.stream(model="tools-openai", input="Time?", tools=[BUILTIN]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.index("response.mcp_list_tools.completed") < kinds.index("response.mcp_call.in_progress")
    assert kinds.index("response.mcp_call.in_progress") < kinds.index("response.mcp_call.completed")
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
    assert kinds[-1] == "response.completed"
    assert [item.type for item in final.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert final.output[1].output and final.output_text == "It is noon."


def test_a_failed_tool_call_is_a_failed_mcp_call_item_and_the_model_still_answers(live, world, tooled):
    tooled["openai"].script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__run_cost", {"run_id": 7})]),
                            FakeReply(text="That failed."))
    with sdk(live, world.red_key).responses.stream(model="tools-openai", input="Cost?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.mcp_call.failed" in kinds and "response.mcp_call.completed" not in kinds
    call = final.output[0]
    assert call.status == "failed" and call.output is None and call.error is not None
    assert final.output_text == "That failed."


def test_a_follow_up_to_a_tool_loop_response_chains_on_its_answer(live, world, tooled):
    fake = tooled["openai"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="It is noon."), FakeReply(text="You are welcome."))
    client = sdk(live, world.red_key)
    first = client.responses.create(model="tools-openai", input="Time?")
    follow = client.responses.create(model="tools-openai", input="Thanks", previous_response_id=first.id)
    assert follow.output_text == "You are welcome."
    assert "It is noon." in json.dumps(fake.requests[-1]["body"])
