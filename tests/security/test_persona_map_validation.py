"""The persona map import (the `import_persona_map` command and the dashboard's
import form) checks every entry with the editor's own validators: a slug that
is not a slug, parameters out of range, a model name with a newline. A bad
map is refused whole, with a message naming the entry, and nothing changes."""

from __future__ import annotations

import html
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from personas.models import Persona
from personas.services import persona_map_export
from tests.dashboard.conftest import FormSession

DEMO = {"provider": "demo", "model": "demo"}
# Each map starts with a valid entry, so "refused whole" means that one is not applied either.
BAD_MAPS = {
    "a path as slug": ({"reviewer": {**DEMO, "params": {"temperature": 0.3}}, "../../x": DEMO},
                       "Persona '../../x': slug: Enter a valid “slug”"),
    "a slug too long": ({"reviewer": DEMO, "x" * 51: DEMO},
                        f"Persona '{'x' * 51}': slug: Ensure this value has at most 50 characters"),
    "temperature out of range": ({"reviewer": DEMO, "architect": {**DEMO, "params": {"temperature": 9}}},
                                 "Persona 'architect', step 1: params: temperature must be a number from 0 to 2."),
    "a fallback's max_tokens": (
        {"reviewer": DEMO, "developer": {**DEMO, "fallback": [{**DEMO, "params": {"max_tokens": 0}}]}},
        "Persona 'developer', step 2: params: max_tokens must be a number from 1 to 1e+06."),
    "params not an object": ({"reviewer": DEMO, "architect": {**DEMO, "params": [1, 2]}},
                             "Persona 'architect', step 1: params: Parameters must be a JSON object"),
    "a newline in a model name": ({"reviewer": DEMO, "architect": {"provider": "demo", "model": "demo\nx"}},
                                  "Persona 'architect', step 1: model: A model name is 1 to 200 printable"),
    "a provider that is not a name": ({"reviewer": DEMO, "architect": {"provider": ["demo"]}},
                                      "Persona 'architect', step 1: every step needs a \"provider\" name."),
}


def state() -> tuple[list[str], dict]:
    return sorted(Persona.objects.values_list("slug", flat=True)), persona_map_export()


@pytest.mark.parametrize("case", list(BAD_MAPS))
def test_the_command_refuses_a_bad_map_whole(world, tmp_path, case):
    data, message = BAD_MAPS[case]
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    before = state()
    with pytest.raises(CommandError) as refused:
        call_command("import_persona_map", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert message in str(refused.value)
    assert state() == before


def test_the_dashboard_import_refuses_a_bad_map_and_the_page_still_renders(live, world, people):
    session = FormSession(live)
    assert session.log_in("olive").status_code == 302
    before = state()
    for case, (data, message) in BAD_MAPS.items():
        posted = session.post("/dashboard/personas/import/", {"text": json.dumps(data)})
        assert posted.status_code == 302, (case, posted.text[:500])
        page = session.get("/dashboard/personas/")
        assert page.status_code == 200, (case, page.text[:500])
        assert "Nothing was imported: " + message in html.unescape(page.text), case
        assert state() == before, case
    good = {"reviewer": {**DEMO, "params": {"temperature": 0.3}}}
    session.post("/dashboard/personas/import/", {"text": json.dumps(good)})
    assert "Imported 1 personas: reviewer." in html.unescape(session.get("/dashboard/personas/").text)
    assert persona_map_export()["reviewer"] == good["reviewer"]
