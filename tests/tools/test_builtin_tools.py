"""The built-in tools that compute, remember and report (tools/builtin/)."""

from __future__ import annotations

from decimal import Decimal

import jsonschema
import pytest

from accounts.models import Team
from budgets.models import Budget, Usage
from tools import registry
from tools.servers.builtin import BUILTIN_TOOLS
from tools.types import ToolContext

from .builtin_support import call, data, granted_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def red(transactional_db):
    return Team.objects.create(name="red")


async def test_there_are_at_least_ten_with_valid_strict_schemas(red):
    key = await granted_key(red)
    specs = await registry.available_tools(key)
    assert len(specs) >= 10 and len(specs) == len(BUILTIN_TOOLS)
    for spec in specs:
        jsonschema.Draft202012Validator.check_schema(spec.input_schema)
        assert spec.input_schema["type"] == "object" and spec.input_schema["additionalProperties"] is False
        assert spec.description


@pytest.mark.parametrize("expression, value", [
    ("2 ** 10 - 24", "1000"), ("(17.5 * 3) / 7", "7.5"), ("max(3, -4, sqrt(16))", "4.0"), ("-7 // 2", "-4"),
    ("round(pi, 3)", "3.142"),
])
async def test_calculator_computes(red, expression, value):
    result = await call(await granted_key(red), "calculator", {"expression": expression})
    assert (result.is_error, result.content) == (False, value)


@pytest.mark.parametrize("expression, says", [
    ("__import__('os').system('true')", "not allowed"), ("(1).__class__", "not allowed"),
    ("9 ** 9 ** 9", "exponents above"), ("2 ** 999 * 2 ** 999 * 2 ** 999 * 2 ** 999 * 2 ** 999", "bits"),
    ("1 / 0", "division by zero"), ("max()", "at least 1 argument"), ("sqrt(-1)", "math domain error"), ("open", "not allowed"), ("1 +", "not an arithmetic expression"),
])
async def test_calculator_refuses_anything_but_arithmetic(red, expression, says):
    result = await call(await granted_key(red), "calculator", {"expression": expression})
    assert result.is_error and result.error_code == "invalid_arguments" and says in result.content


async def test_json_query_picks_paths_and_says_what_is_missing(red):
    key = await granted_key(red)
    document = '{"items": [{"name": "a", "price": 2}, {"name": "b", "price": 3}], "meta": {"content-type": "x"}}'
    assert data(await call(key, "json_query", {"json": document, "path": "items[*].price"})) == [2, 3]
    assert data(await call(key, "json_query", {"json": document, "path": "items[-1].name"})) == "b"
    assert data(await call(key, "json_query", {"json": document, "path": 'meta["content-type"]'})) == "x"
    missing = await call(key, "json_query", {"json": document, "path": "items[5]"})
    assert missing.error_code == "not_found" and "outside the array (length 2)" in missing.content
    broken = await call(key, "json_query", {"json": "{nope", "path": ""})
    assert broken.error_code == "invalid_arguments" and "not valid JSON" in broken.content


async def test_text_diff_is_a_unified_diff(red):
    key = await granted_key(red)
    result = await call(key, "text_diff", {"before": "a\nb\nc\n", "after": "a\nB\nc\n", "context_lines": 0})
    assert result.content.splitlines() == ["--- before", "+++ after", "@@ -2 +2 @@", "-b", "+B"]
    assert (await call(key, "text_diff", {"before": "same", "after": "same"})).content == ""


async def test_notes_are_shared_within_a_run_and_a_team_only(red):
    blue = await Team.objects.acreate(name="blue")
    writer, reader, stranger = await granted_key(red, "w"), await granted_key(red, "r"), await granted_key(blue)
    saved = await call(writer, "note_put", {"name": "plan", "value": "step 1: design"}, run_id="run-1")
    assert not saved.is_error
    assert (await call(reader, "note_get", {"name": "plan"}, run_id="run-1")).content == "step 1: design"
    assert data(await call(reader, "note_get", {}, run_id="run-1"))["notes"] == ["plan"]
    assert (await call(reader, "note_get", {"name": "plan"}, run_id="run-2")).error_code == "not_found"
    assert (await call(stranger, "note_get", {"name": "plan"}, run_id="run-1")).error_code == "not_found"
    assert (await call(reader, "note_get", {"name": "plan"})).error_code == "invalid_arguments"  # no run
    await call(writer, "note_put", {"name": "plan", "value": ""}, run_id="run-1")
    assert data(await call(reader, "note_get", {}, run_id="run-1"))["notes"] == []


async def test_budget_status_reports_the_callers_team_and_key_budgets_only(red):
    key = await granted_key(red)
    await Budget.objects.acreate(name="red monthly", scope="team", team=red, limit_usd=10)
    await Budget.objects.acreate(name="this key", scope="key", api_key_id=key.id, limit_usd=2, hard=False)
    await Budget.objects.acreate(name="everyone", scope="global", limit_usd=1000)
    await Usage.objects.acreate(request_id="r1", endpoint="chat.completions", team=red, api_key_id=key.id,
                                cost_usd="0.5", status="ok")
    budgets = data(await call(key, "budget_status"))["budgets"]
    assert [(b["name"], Decimal(b["spent_usd"]), b["percent_used"], b["hard"]) for b in budgets] == [
        ("red monthly", Decimal("0.5"), 5, True), ("this key", Decimal("0.5"), 25, False)]


async def test_run_cost_adds_up_the_callers_run(red):
    key = await granted_key(red)
    await Usage.objects.acreate(request_id="r1", endpoint="chat.completions", team=red, run_id="run-9",
                                cost_usd="0.25", input_tokens=10, output_tokens=5, status="ok")
    totals = data(await call(key, "run_cost", {}, run_id="run-9"))
    assert (totals["model_calls"], Decimal(totals["cost_usd"]), totals["input_tokens"]) == (1, Decimal("0.25"), 10)


async def test_list_personas_shows_the_callable_ones(world):
    key = await granted_key(world.red)
    slugs = [p["slug"] for p in data(await call(key, "list_personas"))["personas"]]
    assert "architect" in slugs and slugs == sorted(slugs)


async def test_ask_persona_asks_through_the_context_and_refuses_when_nested_too_deep(world):
    key = await granted_key(world.red)
    asked = []

    async def ask(persona: str, question: str) -> str:
        asked.append((persona, question))
        return "Use PostgreSQL."

    answer = await call(key, "ask_persona", {"persona": "architect", "question": "Which DB?"}, ask=ask)
    assert (answer.is_error, answer.content, asked) == (False, "Use PostgreSQL.", [("architect", "Which DB?")])
    unknown = await call(key, "ask_persona", {"persona": "nobody", "question": "?"}, ask=ask)
    assert unknown.error_code == "unknown_persona" and "architect" in unknown.content
    too_deep = await call(key, "ask_persona", {"persona": "architect", "question": "?"}, ask=None)
    assert too_deep.error_code == "ask_too_deep" and "too deeply" in too_deep.content
    assert len(asked) == 1


async def test_a_disabled_persona_cannot_be_asked(world):
    from personas.models import Persona

    await Persona.objects.filter(slug="reviewer").aupdate(enabled=False)
    key = await granted_key(world.red)
    result = await registry.call_tool("builtin__ask_persona", {"persona": "reviewer", "question": "?"},
                                      ToolContext(key=key, ask=_never))
    assert result.error_code == "unknown_persona"
    slugs = [p["slug"] for p in data(await call(key, "list_personas"))["personas"]]
    assert "reviewer" not in slugs


async def _never(persona: str, question: str) -> str:
    raise AssertionError("must not be asked")


async def test_current_time_is_utc(red):
    result = await call(await granted_key(red), "current_time")
    assert result.content.endswith("+00:00")




async def test_a_question_the_budget_refuses_is_a_tool_error_the_model_can_read(world):
    from gateway.tool_asks import asker

    key = await granted_key(world.red)
    await Budget.objects.acreate(name="red spent", scope="team", team=world.red, limit_usd=0, hard=True)
    result = await call(key, "ask_persona", {"persona": "architect", "question": "Which DB?"},
                        ask=asker(key, run_id="run-b"), run_id="run-b")
    assert result.is_error and result.error_code == "ask_failed"
    assert result.content.startswith("architect did not answer:") and "red spent" in result.content
    row = await Usage.objects.aget(endpoint="tool.ask_persona")
    assert (row.status, row.run_id, row.http_status) == ("refused", "run-b", 429)
