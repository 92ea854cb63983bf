"""gateway/tool_asks.py: a persona consulted by a tool is one request of its own."""

import pytest

from accounts.models import ApiKey
from accounts.snapshot import load_key
from budgets.models import Usage
from gateway.tool_asks import MAX_DEPTH, AskFailed, ask, asker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def _red_key(world):
    key = await ApiKey.objects.aget(team=world.red, name="red agents")
    return await sync(load_key)(key.key_hash)


def sync(function):
    from asgiref.sync import sync_to_async

    return sync_to_async(function)


async def test_a_question_is_its_own_usage_row_in_the_run(world):
    key = await _red_key(world)
    answer = await ask(key, persona="architect", question="Which database?", run_id="run-7")
    assert answer
    row = await Usage.objects.aget(endpoint="tool.ask_persona")
    assert (row.run_id, row.persona, row.status, row.team_id) == ("run-7", "architect", "ok", world.red.id)


async def test_an_unknown_persona_is_a_failure_the_model_can_read_and_still_a_row(world):
    key = await _red_key(world)
    with pytest.raises(AskFailed, match="nobody did not answer"):
        await ask(key, persona="nobody", question="?", run_id="run-8")
    row = await Usage.objects.aget(endpoint="tool.ask_persona")
    assert row.status == "refused" and row.http_status == 404


async def test_questions_nest_only_so_deep(world):
    key = await _red_key(world)
    assert asker(key, run_id="r", depth=MAX_DEPTH - 1) is not None
    assert asker(key, run_id="r", depth=MAX_DEPTH) is None
