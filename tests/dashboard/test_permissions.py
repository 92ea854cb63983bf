"""Who may see and change what, through Django's test client (no browser)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import AuditEntry
from budgets.models import Budget, Usage
from personas.models import Persona
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db


def usage(team, cost: str, **fields) -> Usage:
    return Usage.objects.create(request_id=f"req_{team.name}_{cost}", team=team, persona="architect",
                                provider="demo", model="demo", cost_usd=Decimal(cost), **fields)


def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get(reverse("budgets:costs"))
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_the_root_redirects_to_the_overview(client):
    assert client.get("/")["Location"] == reverse("dashboard:overview")


def test_the_login_page_logs_a_user_in(client, people):
    page = client.get("/login/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    response = client.post("/login/", {"username": "rita", "password": "correct horse battery staple 7"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:overview")).status_code == 200


def test_a_team_lead_sees_only_their_own_teams_costs(people, world):
    usage(world.red, "1.25")
    usage(world.blue, "9.50")
    rita = client_for(people.rita)
    page = rita.get(reverse("budgets:costs")).content.decode()
    assert "$1.2500" in page and "$9.5000" not in page and ">blue<" not in page
    csv = b"".join(rita.get(reverse("budgets:costs") + "?format=csv")).decode()
    assert "req_red_1.25" in csv and "req_blue" not in csv


@pytest.mark.parametrize("view", ["budgets:costs", "budgets:usage"])
def test_a_team_lead_cannot_ask_for_another_teams_numbers(people, world, view):
    response = client_for(people.rita).get(reverse(view) + f"?team={world.blue.pk}")
    assert response.status_code == 404


def test_a_team_lead_cannot_open_another_teams_request(people, world):
    blue_row = usage(world.blue, "2.00")
    assert client_for(people.rita).get(reverse("budgets:usage_detail", args=[blue_row.pk])).status_code == 404
    assert client_for(people.bruno).get(reverse("budgets:usage_detail", args=[blue_row.pk])).status_code == 200


def test_a_team_lead_sees_their_teams_budgets_only(people, world):
    Budget.objects.create(name="red monthly", scope="team", team=world.red, limit_usd=Decimal(10))
    Budget.objects.create(name="blue monthly", scope="team", team=world.blue, limit_usd=Decimal(10))
    usage(world.red, "8.20")
    page = client_for(people.rita).get(reverse("budgets:list")).content.decode()
    assert "Budget &#x27;red monthly&#x27; is 82% used ($8.20 of $10.00)." in page
    assert "blue monthly" not in page


@pytest.mark.parametrize("name", ["max", "rita"])
def test_someone_who_is_not_an_operator_cannot_edit_routes(people, name):
    client = client_for(getattr(people, name))
    step = Persona.objects.get(slug="architect").steps.get()
    assert client.get(reverse("personas:edit", args=["architect"])).status_code == 403
    response = client.post(reverse("personas:step_move", args=["architect", step.pk, "down"]))
    assert response.status_code == 403
    response = client.post(reverse("personas:step_add", args=["architect"]),
                           {"new-provider": "demo", "new-model": "demo"})
    assert response.status_code == 403
    assert Persona.objects.get(slug="architect").steps.count() == 1
    assert client.post(reverse("budgets:create"), {"name": "x"}).status_code == 403


def test_a_member_without_a_role_sees_no_money(people, world):
    usage(world.red, "3.00")
    client = client_for(people.max)
    assert client.get(reverse("budgets:costs")).status_code == 403
    assert "no dashboard role yet" in client.get(reverse("dashboard:overview")).content.decode()


def test_an_operator_sees_every_team_and_the_admin_link_is_for_admins(people, world):
    usage(world.red, "1.00")
    usage(world.blue, "2.00")
    page = client_for(people.olive).get(reverse("budgets:costs")).content.decode()
    assert "$3.0000" in page and "Django admin" not in page
    assert "Django admin" in client_for(people.ada).get(reverse("dashboard:overview")).content.decode()
    assert client_for(people.olive).get("/admin/").status_code == 302  # not staff: admin stays closed


def test_only_admins_manage_teams(people):
    assert client_for(people.olive).post(reverse("dashboard:team_create"), {"name": "green"}).status_code == 403
    assert client_for(people.ada).post(reverse("dashboard:team_create"), {"name": "green"}).status_code == 302
    assert AuditEntry.objects.get(action="team.create").actor_name == "ada"


def test_every_form_needs_a_csrf_token(people):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(people.olive)
    step = Persona.objects.get(slug="architect").steps.get()
    response = client.post(reverse("personas:step_remove", args=["architect", step.pk]))
    assert response.status_code == 403 and Persona.objects.get(slug="architect").steps.count() == 1
