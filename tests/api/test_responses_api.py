"""POST /v1/responses and the stored responses (GET, DELETE, input_items), driven
by the official openai SDK against a live gateway: the demo persona for the
core behaviours; OpenAI, Anthropic and Gemini routes through their wire-level
fakes for what each provider kind must carry."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from budgets.models import Budget, Usage
from gateway.models import StoredResponse
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.streaming_support import wait_for

FAKE_CLASSES = {"openai": FakeOpenAIServer, "anthropic": FakeAnthropicServer, "gemini": FakeGeminiServer}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
               "required": ["city", "sunny"], "additionalProperties": False}


def sdk(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def fakes():
    started = {kind: cls().start() for kind, cls in FAKE_CLASSES.items()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def routed(fakes, world):
    """One persona per provider kind: `via-openai`, `via-anthropic`, `via-gemini`."""
    for kind, fake in fakes.items():
        fake.reset()
        base_url = fake.base_url + "/v1" if kind == "openai" else fake.base_url
        provider = Provider(name=kind, kind=kind, base_url=base_url, read_timeout=5)
        provider.set_credential(f"sk-test-{kind}")
        provider.save()
        Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
        persona = Persona.objects.create(slug=f"via-{kind}")
        RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return fakes


# -- the demo persona: the answer object, the ledger, storage --------------------------------


def test_the_sdk_gets_a_response_object_from_a_persona(live, world):
    raw = sdk(live, world.red_key).responses.with_raw_response.create(
        model="architect", input="Design a system", instructions="Be brief.", metadata={"run_id": "run-7"})
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed"
    assert response.output_text.startswith("[demo]") and "Design a system" in response.output_text
    message = response.output[0]
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert message.id.startswith("msg_") and message.content[0].type == "output_text"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Be brief." and response.metadata == {"run_id": "run-7"}
    assert raw.headers["x-ep-provider"] == "demo" and float(raw.headers["x-ep-cost-usd"]) > 0
    row = Usage.objects.get()
    assert (row.endpoint, row.persona, row.status, row.run_id) == ("v1.responses", "architect", "ok", "run-7")
    assert (row.input_tokens, row.output_tokens) == (response.usage.input_tokens, response.usage.output_tokens)
    assert row.request_id == raw.headers["x-request-id"]


def test_a_stored_response_is_retrieved_listed_and_deleted(live, world):
    client = sdk(live, world.red_key)
    created = client.responses.create(model="architect", input=[
        {"role": "developer", "content": "Answer in one line."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is a queue?"}]}])
    again = client.responses.retrieve(created.id)
    assert again.output_text == created.output_text and again.usage.total_tokens == created.usage.total_tokens
    items = client.responses.input_items.list(created.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "developer"), ("message", "user")]
    assert items.data[1].content[0].text == "What is a queue?" and all(i.id for i in items.data)
    assert [i.id for i in client.responses.input_items.list(created.id).data] == [i.id for i in items.data][::-1]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert caught.value.body["code"] == "response_not_found"
    assert not StoredResponse.objects.exists()
    # every request left its one row: create, retrieve, two lists, delete, the refused retrieve
    assert list(Usage.objects.order_by("created_at").values_list("endpoint", "http_status")) == [
        ("v1.responses", 200), ("responses.get", 200), ("responses.input_items", 200),
        ("responses.input_items", 200), ("responses.delete", 200), ("responses.get", 404)]


def test_one_team_never_reads_another_teams_responses(live, world):
    created = sdk(live, world.red_key).responses.create(model="architect", input="red's secret plan")
    blue = sdk(live, world.blue_key)
    for attempt in (lambda: blue.responses.retrieve(created.id), lambda: blue.responses.delete(created.id),
                    lambda: blue.responses.input_items.list(created.id),
                    lambda: blue.responses.create(model="architect", input="go on",
                                                  previous_response_id=created.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert StoredResponse.objects.filter(id=created.id).exists()


def test_store_false_keeps_nothing(live, world):
    client = sdk(live, world.red_key)
    created = client.responses.create(model="architect", input="ephemeral", store=False)
    assert created.status == "completed" and not StoredResponse.objects.exists()
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="architect", input="and then?", previous_response_id=created.id)
    assert caught.value.body["code"] == "previous_response_not_found"
    assert caught.value.body["param"] == "previous_response_id"


def test_previous_response_id_carries_the_conversation(live, world, routed):
    fake = routed["openai"]
    fake.script(FakeReply(text="Your name is Ada."), FakeReply(text="You live in Oslo."))
    client = sdk(live, world.red_key)
    first = client.responses.create(model="via-openai", input="My name is Ada and I live in Oslo.",
                                    instructions="first instructions")
    second = client.responses.create(model="via-openai", input="Where do I live?", previous_response_id=first.id)
    assert second.output_text == "You live in Oslo." and second.previous_response_id == first.id
    sent = fake.requests[-1]["body"]["messages"]
    # the first turn and its answer, then the new input; instructions are not carried over (as OpenAI does)
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "My name is Ada and I live in Oslo."), ("assistant", "Your name is Ada."),
        ("user", "Where do I live?")]
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in listed] == ["message", "message", "message"]
    assert listed[1].id == first.output[0].id


def test_expired_responses_are_gone(live, world):
    from datetime import timedelta

    from django.utils import timezone

    client = sdk(live, world.red_key)
    old = client.responses.create(model="architect", input="long ago")
    StoredResponse.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=31))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(old.id)
    client.responses.create(model="architect", input="today")  # a write prunes what expired
    assert not StoredResponse.objects.filter(id=old.id).exists() and StoredResponse.objects.count() == 1


# -- streaming ----------------------------------------------------------------------------------


def test_the_sdk_streams_typed_events_in_order(live, world):
    with sdk(live, world.red_key).responses.stream(model="architect", input="Write code") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and text.startswith("[demo]")
    assert final.status == "completed" and final.usage.output_tokens > 0
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    row = Usage.objects.get()
    assert row.stream and row.status == "ok" and row.output_tokens == final.usage.output_tokens
    assert sdk(live, world.red_key).responses.retrieve(final.id).output_text == text


def test_streamed_function_calls_arrive_as_items_with_argument_deltas(live, world):
    with sdk(live, world.red_key).responses.stream(model="architect", input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == {"city": json.loads(call.arguments)["city"]}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments and done.item_id == call.id


def test_create_with_stream_true_gives_raw_events(live, world):
    events = list(sdk(live, world.red_key).responses.create(model="architect", input="hello", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output[0].content[0].text.startswith("[demo]")


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, code, param", [
    ({"input": "x", "tools": [{"type": "web_search"}]}, "unsupported_tool", "tools.0.type"),
    ({"input": [{"type": "input_file_search_call", "id": "x"}]}, "unsupported_input_item", "input.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "unsupported_content_type", "input.0.content.0"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "invalid_request", "input.0.call_id"),
    ({"input": []}, "invalid_request", "input"),
    ({"input": "x", "background": True}, "unsupported_parameter", "background"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "invalid_request", "text.format"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "invalid_request", "tool_choice"),
])
def test_what_cannot_be_carried_is_refused_by_name(live, world, body, code, param):
    response = httpx.post(live.url + "/v1/responses", json={"model": "architect", **body},
                          headers={"Authorization": f"Bearer {world.red_key}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.error_code) == ("refused", 400, code)


def test_a_budget_refusal_is_a_429_envelope_and_one_row(live, world):
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=1000, output_price=1000)
    Budget.objects.create(name="red tiny", scope="team", team=world.red, period="day", limit_usd="0.000001")
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(live, world.red_key).responses.create(model="architect", input="expensive")
    assert caught.value.body["code"] == "budget_exceeded" and "red tiny" in caught.value.message
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.error_code, row.provider) == ("refused", 429, "budget_exceeded", "")
    assert not StoredResponse.objects.exists()


def test_an_idempotency_key_runs_the_request_once(live, world, routed):
    fake = routed["openai"]
    client = sdk(live, world.red_key)
    key = f"k-{uuid.uuid4().hex}"  # records outlive a run in a shared Redis (24 h): never reuse one
    first = client.responses.with_raw_response.create(model="via-openai", input="once",
                                                      extra_headers={"Idempotency-Key": key})
    again = client.responses.with_raw_response.create(model="via-openai", input="once",
                                                      extra_headers={"Idempotency-Key": key})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.parse().id and fake.call_count == 1
    assert StoredResponse.objects.count() == 1
    assert sorted(Usage.objects.values_list("error_code", flat=True)) == ["", "idempotent_replay"]


# -- every provider kind: tools, formats, streams, reasoning -----------------------------------


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_a_tool_round_trip_from_every_provider(live, world, routed, kind):
    fake = routed[kind]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})]),
                FakeReply(text="Oslo is sunny."))
    client = sdk(live, world.red_key)
    conversation = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.responses.create(model=f"via-{kind}", input=conversation, tools=[WEATHER])
    (call,) = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Oslo"})
    assert call.call_id and call.id.startswith("fc_") and first.status == "completed"
    # the Agents SDK's way: the whole conversation again, with the call's output
    conversation += [item.model_dump(exclude_none=True) for item in first.output]
    conversation.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"})
    final = client.responses.create(model=f"via-{kind}", input=conversation, tools=[WEATHER], store=False)
    assert final.output_text == "Oslo is sunny."
    sent = json.dumps(fake.requests[-1]["body"])
    assert "sunny, 21 C" in sent and call.call_id in sent  # the result reached the provider, tied to its call
    rows = list(Usage.objects.filter(persona=f"via-{kind}"))
    assert len(rows) == 2 and {r.provider for r in rows} == {kind} and all(r.cost_usd > 0 for r in rows)


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_a_json_schema_format_reaches_every_provider(live, world, routed, kind):
    fake = routed[kind]
    fake.script(FakeReply(text='{"city": "Oslo", "sunny": true}'))
    response = sdk(live, world.red_key).responses.create(
        model=f"via-{kind}", input="Weather in Oslo as JSON",
        text={"format": {"type": "json_schema", "name": "weather", "schema": CITY_SCHEMA, "strict": True}})
    assert json.loads(response.output_text) == {"city": "Oslo", "sunny": True}
    assert response.text.format.type == "json_schema"
    assert '"sunny"' in json.dumps(fake.requests[-1]["body"])  # the schema went to the provider


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_streams_from_every_provider_end_completed(live, world, routed, kind):
    routed[kind].script(FakeReply(text="Sunny in Rome, see the forecast.",
                                  tool_calls=[FakeToolCall("get_weather", {"city": "Rome"})]))
    with sdk(live, world.red_key).responses.stream(model=f"via-{kind}", input="Rome?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.status == "completed" and final.usage.total_tokens > 0
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output_text == "Sunny in Rome, see the forecast."
    assert json.loads(final.output[1].arguments) == {"city": "Rome"}
    assert Usage.objects.get().output_tokens == final.usage.output_tokens


def test_strict_tools_and_reasoning_reach_openai(live, world, routed):
    fake = routed["openai"]
    sdk(live, world.red_key).responses.create(model="via-openai", input="think", tools=[WEATHER],
                                              tool_choice={"type": "function", "name": "get_weather"},
                                              reasoning={"effort": "high"}, max_output_tokens=50)
    body = fake.requests[-1]["body"]
    assert body["reasoning_effort"] == "high"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tools"][0]["function"].get("strict") is True


def test_reasoning_is_mapped_for_gemini_and_refused_for_anthropic(live, world, routed):
    client = sdk(live, world.red_key)
    client.responses.create(model="via-gemini", input="think", reasoning={"effort": "low"})
    thinking = routed["gemini"].requests[-1]["body"]["generationConfig"]["thinkingConfig"]
    assert list(thinking.values()) == [1024]  # "low" as a thinking budget
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="via-anthropic", input="think", reasoning={"effort": "low"})
    assert caught.value.body["code"] == "reasoning_not_supported" and "anthropic" in caught.value.message
    assert not routed["anthropic"].requests  # refused before any provider was called


def test_a_stream_cut_after_its_start_ends_with_error_and_failed_events(live, world, routed):
    routed["openai"].script(Fault("cut", after_chunks=2, reply=FakeReply(text="this answer will be cut short")))
    events = list(sdk(live, world.red_key).responses.create(model="via-openai", input="go", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-2].code.startswith("provider_")
    row = Usage.objects.get()
    assert row.status == "error" and row.stream
    assert not StoredResponse.objects.exists()


def test_an_answer_cut_at_max_output_tokens_is_incomplete(live, world, routed):
    fake = routed["openai"]
    fake.script(FakeReply(text="A long answer that", finish="length"),
                FakeReply(text="A long answer that", finish="length"))
    client = sdk(live, world.red_key)
    response = client.responses.create(model="via-openai", input="Tell me everything", max_output_tokens=5)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    sent = fake.requests[-1]["body"]
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 5
    events = list(client.responses.create(model="via-openai", input="Again", max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == "A long answer that"


def test_images_and_tool_outputs_reach_the_provider_in_its_format(live, world, routed):
    fake = routed["openai"]
    image = "data:image/png;base64,iVBORw0KGgo="
    sdk(live, world.red_key).responses.create(model="via-openai", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": image, "detail": "low"}]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "a cat"}]}])
    user, assistant, tool = fake.requests[-1]["body"]["messages"]
    assert user["content"] == [{"type": "text", "text": "What is this?"},
                               {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]
    assert assistant["tool_calls"][0]["id"] == "call_1" and assistant["tool_calls"][0]["function"]["name"] == "look"
    assert (tool["role"], tool["tool_call_id"], tool["content"]) == ("tool", "call_1", "a cat")


def test_a_provider_refusal_before_the_stream_starts_is_an_http_error(live, world, routed):
    routed["openai"].script(Fault("status", status=400, message="bad schema"))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).responses.create(model="via-openai", input="go", stream=True)
    assert caught.value.body["code"] == "provider_bad_request" and "bad schema" in caught.value.message
    assert Usage.objects.get().http_status == 400


def test_a_stream_the_client_leaves_is_billed_so_far_and_not_stored(live, world):
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 150}
    world.demo.save()
    body = {"model": "architect", "stream": True, "input": "a long answer please"}
    with httpx.stream("POST", live.url + "/v1/responses", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {world.red_key}"}) as response:
        deltas = 0
        for line in response.iter_lines():
            deltas += line == "event: response.output_text.delta"
            if deltas == 3:
                break
    row = wait_for(lambda: Usage.objects.filter(status="cancelled").first())
    assert row and row.output_tokens > 0 and row.cost_usd > 0 and row.http_status == 499
    assert not StoredResponse.objects.exists()


def test_a_max_output_tokens_over_the_persona_cap_is_refused_in_this_apis_terms(live, world):
    persona = Persona.objects.get(slug="architect")
    persona.max_output_tokens = 10
    persona.save()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, world.red_key).responses.create(model="architect", input="hi", max_output_tokens=50)
    error = caught.value.body
    assert (error["code"], error["param"]) == ("max_tokens_too_large", "max_output_tokens")
    assert "max_output_tokens is 50" in error["message"] and "at most 10" in error["message"]
