"""A conversation chained with previous_response_id keeps its context when its
turns land on different gateway processes (two servers, one database)."""

from __future__ import annotations

import openai
import pytest

from budgets.models import Usage
from tests.conftest import start_daphne, stop_process
from tests.fakes.common import FakeReply

pytestmark = pytest.mark.slow


def test_a_conversation_continues_on_another_process(live, world, via_fake, test_database_url):
    via_fake.script(FakeReply(text="Noted: Ada, Oslo."), FakeReply(text="You live in Oslo."),
                    FakeReply(text="Your name is Ada."))
    second = start_daphne(test_database_url, name="gateway-responses")
    try:
        one = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
        two = openai.OpenAI(base_url=second.url + "/v1", api_key=world.red_key, max_retries=0)
        first = one.responses.create(model="via-openai", input="I am Ada and I live in Oslo.")
        with two.responses.stream(model="via-openai", input="Where do I live?",
                                  previous_response_id=first.id) as stream:
            answer = stream.get_final_response()
        third = one.responses.create(model="via-openai", input="And my name?", previous_response_id=answer.id)
        listed = two.responses.input_items.list(third.id, order="asc").data
    finally:
        stop_process(second.process)
    assert answer.output_text == "You live in Oslo." and third.output_text == "Your name is Ada."
    sent = [[(m["role"], m["content"]) for m in r["body"]["messages"]] for r in via_fake.requests]
    assert sent[1] == [("user", "I am Ada and I live in Oslo."), ("assistant", "Noted: Ada, Oslo."),
                       ("user", "Where do I live?")]
    assert sent[2] == sent[1] + [("assistant", "You live in Oslo."), ("user", "And my name?")]
    assert [item.id for item in listed][-2] == answer.output[0].id  # the streamed answer, as stored
    assert Usage.objects.filter(endpoint="v1.responses", status="ok").count() == 3
