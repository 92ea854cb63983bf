"""Dashboard writes and reads without a browser: import/export, audit,
selectors' arithmetic, validation messages."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEntry
from budgets import selectors
from budgets.models import Alert, Budget, Usage
from personas.models import Persona
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db


def test_the_operators_group_comes_from_the_migration():
    from django.contrib.auth.models import Group

    assert Group.objects.filter(name="operators").exists()


def test_the_persona_map_exports_and_imports_back_with_an_audit_entry(people):
    client = client_for(people.olive)
    exported = json.loads(client.get(reverse("personas:export")).content)
    assert exported["architect"] == {"provider": "demo", "model": "demo"}
    exported["architect"]["fallback"] = [{"provider": "demo", "model": "demo-2"}]
    response = client.post(reverse("personas:import"), {"text": json.dumps(exported)}, follow=True)
    assert "Imported 3 personas: architect, developer, reviewer." in response.content.decode()
    assert [s.model for s in Persona.objects.get(slug="architect").steps.order_by("position")] == ["demo", "demo-2"]
    entry = AuditEntry.objects.get(action="persona_map.import")
    assert "fallback" not in entry.before["architect"] and entry.after["architect"]["fallback"]


def test_a_bad_persona_map_imports_nothing_and_says_why(people):
    response = client_for(people.olive).post(reverse("personas:import"),
                                             {"text": '{"architect": {"provider": "nope"}}'}, follow=True)
    assert "Nothing was imported: Unknown provider &#x27;nope&#x27;" in response.content.decode()
    assert Persona.objects.get(slug="architect").steps.get().model == "demo"


def test_a_step_with_invalid_params_is_refused_with_a_plain_message(people):
    client = client_for(people.olive)
    response = client.post(reverse("personas:step_add", args=["architect"]),
                           {"new-provider": "demo", "new-model": "demo", "new-params": "[1, 2]"},
                           HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="chain"' in response.content.decode()
    assert "Parameters must be a JSON object" in response.content.decode()
    assert "<html" not in response.content.decode()  # a fragment for htmx
    assert Persona.objects.get(slug="architect").steps.count() == 1


def test_without_htmx_a_move_redirects_back_to_the_page(people, world):
    from personas.models import RouteStep

    persona = Persona.objects.get(slug="architect")
    second = RouteStep.objects.create(persona=persona, position=1, provider=world.demo, model="second")
    response = client_for(people.olive).post(reverse("personas:step_move", args=["architect", second.pk, "up"]))
    assert response.status_code == 302 and response["Location"] == reverse("personas:edit", args=["architect"])
    assert [s.model for s in persona.steps.order_by("position")] == ["second", "demo"]


def test_spend_by_groups_and_orders_by_cost(world):
    for team, persona, cost in [(world.red, "architect", "1.5"), (world.red, "developer", "0.5"),
                                (world.blue, "architect", "4")]:
        Usage.objects.create(request_id="r", team=team, persona=persona, cost_usd=Decimal(cost))
    rows = selectors.spend_by(dimension="persona", team_ids={world.red.pk}, since=None)
    assert [(r["label"], r["cost"]) for r in rows] == [("architect", Decimal("1.5")), ("developer", Decimal("0.5"))]
    everyone = selectors.spend_by(dimension="team", team_ids=None, since=None)
    assert [(r["label"], r["requests"]) for r in everyone] == [("blue", 1), ("red", 2)]


def test_spend_per_day_is_zero_filled_and_counts_only_its_window(world):
    now = timezone.now()
    Usage.objects.create(request_id="a", team=world.red, cost_usd=Decimal(2), created_at=now - timedelta(days=1))
    Usage.objects.create(request_id="b", team=world.red, cost_usd=Decimal(9), created_at=now - timedelta(days=9))
    series = selectors.spend_per_day(team_ids=None, days=7, now=now)
    assert len(series) == 7 and series[-1] == (now.date(), Decimal(0))
    assert series[-2] == ((now - timedelta(days=1)).date(), Decimal(2))
    assert sum(v for _, v in series) == Decimal(2)


def test_a_team_lead_acknowledges_their_alert_but_not_another_teams(people, world):
    red = Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1))
    blue = Budget.objects.create(name="blue", scope="team", team=world.blue, limit_usd=Decimal(1))
    start = timezone.now()
    red_alert = Alert.objects.create(budget=red, threshold=80, period_start=start, message="Budget 'red' is 80% used")
    blue_alert = Alert.objects.create(budget=blue, threshold=80, period_start=start, message="blue 80%")
    rita = client_for(people.rita)
    assert rita.post(reverse("budgets:alert_ack", args=[blue_alert.pk])).status_code == 404
    assert rita.post(reverse("budgets:alert_ack", args=[red_alert.pk])).status_code == 302
    red_alert.refresh_from_db()
    blue_alert.refresh_from_db()
    assert red_alert.acknowledged_at is not None and blue_alert.acknowledged_at is None
    assert AuditEntry.objects.get(action="alert.acknowledge").actor_name == "rita"
