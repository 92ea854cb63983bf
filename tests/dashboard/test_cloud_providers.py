"""The provider form and page for the cloud kinds (Azure OpenAI, AWS Bedrock,
Vertex AI): their settings, credentials checked before they are saved and
stored encrypted, the page saying where calls go; in Chromium, the form shows
each kind only its own fields."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from accounts.models import AuditEntry
from providers.models import Provider
from tests.dashboard.conftest import client_for, log_in, screenshot
from tests.dashboard.test_connection_errors import closed_port
from tests.fakes.bedrock_server import ACCESS_KEY_ID, REGION, FakeBedrockServer
from tests.fakes.vertex_server import service_account_json

AWS_KEYS = json.dumps({"access_key_id": "AKIAEXAMPLE000000001", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxR"})


def post_provider(client, **fields):
    data = {"name": "cloud", "kind": "bedrock", "connect_timeout": 5, "read_timeout": 60, "enabled": "on",
            "options": ""} | fields
    return client.post(reverse("providers:create"), data)


def errors(response) -> dict[str, list[str]]:
    return {name: list(errs) for name, errs in response.context["form"].errors.items()}


def test_an_operator_creates_a_bedrock_provider_with_region_and_keys(people):
    response = post_provider(client_for(people.olive), region="eu-central-1", credential=AWS_KEYS)
    assert response.status_code == 302
    provider = Provider.objects.get(name="cloud")
    assert provider.options == {"region": "eu-central-1"}
    assert json.loads(provider.get_credential())["secret_access_key"] == "wJalrXUtnFEMI/K7MDENG/bPxR"
    assert "wJalrXUtnFEMI" not in provider.credential_encrypted
    entry = AuditEntry.objects.get(action="provider.create")
    assert entry.after["options"] == {"region": "eu-central-1"} and "wJalrXUtnFEMI" not in json.dumps(entry.after)


@pytest.mark.parametrize("fields, field, words", [
    ({"credential": AWS_KEYS}, "region", "needs its AWS region"),
    ({"region": "eu-central-1", "credential": "AKIA:secret"}, "credential", "JSON object"),
    ({"region": "eu-central-1", "credential": '{"access_key_id": "AKIA1"}'}, "credential", "secret_access_key"),
    ({"region": "evil.example.com/", "credential": AWS_KEYS}, "region", "lower-case letters"),
    ({"region": "eu-central-1", "credential_type": "entra_token"}, "credential_type", "not one a bedrock"),
    ({"kind": "vertex_gemini", "region": "europe-west4"}, "project", "project id"),
    ({"kind": "vertex_anthropic", "project": "p-1", "region": "us-east5", "credential": "not a token"},
     "credential", "service-account key file"),
    ({"kind": "vertex_gemini", "project": "p-1", "region": "us-east5", "credential": '{"type": "authorized_user"}'},
     "credential", "service-account key file"),
])
def test_a_cloud_provider_that_cannot_work_is_refused_with_a_sentence(people, fields, field, words):
    response = post_provider(client_for(people.olive), **fields)
    assert response.status_code == 400
    assert any(words in message for message in errors(response)[field]), errors(response)
    assert not Provider.objects.filter(name="cloud").exists()


def test_a_service_account_key_whose_token_uri_is_a_metadata_address_is_refused(people):
    key_file = service_account_json("http://169.254.169.254/token")
    response = post_provider(client_for(people.ada), kind="vertex_gemini", project="p-1", region="us-east5",
                             credential=key_file)
    assert response.status_code == 400
    assert any("token_uri is refused" in m and "link-local" in m for m in errors(response)["credential"])


def test_azure_needs_its_resource_endpoint_and_takes_an_entra_token(people):
    ada = client_for(people.ada)  # an admin: the base URL is admin-only
    response = post_provider(ada, kind="azure_openai", credential="key")
    assert "needs its resource's endpoint" in errors(response)["base_url"][0]
    response = post_provider(ada, kind="azure_openai", base_url="https://127.0.0.1:9/", api_version="2025-04-01-preview",
                             credential_type="entra_token", credential="eyJ0.entra.token")
    assert response.status_code == 302, errors(response)
    provider = Provider.objects.get(name="cloud")
    assert provider.options == {"api_version": "2025-04-01-preview", "credential_type": "entra_token"}
    page = ada.get(reverse("providers:edit", args=["cloud"])).content.decode()
    assert "https://127.0.0.1:9/openai/deployments/&lt;model&gt;" in page and "Entra ID token" in page


def test_an_operator_changes_a_region_but_not_the_admin_only_options(people):
    provider = Provider(name="cloud", kind="bedrock", options={"region": "us-east-1", "max_connections": 50})
    provider.set_credential(AWS_KEYS)
    provider.save()
    olive = client_for(people.olive)
    response = olive.post(reverse("providers:edit", args=["cloud"]), {
        "name": "cloud", "kind": "bedrock", "connect_timeout": 5, "read_timeout": 60, "enabled": "on",
        "region": "eu-west-3", "options": '{"max_connections": 1}'})  # options is disabled: ignored
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.options == {"region": "eu-west-3", "max_connections": 50}
    assert provider.get_credential() == AWS_KEYS  # an empty key field keeps the stored one
    page = olive.get(reverse("providers:edit", args=["cloud"])).content.decode()
    assert "https://bedrock-runtime.eu-west-3.amazonaws.com" in page and "SigV4" in page


def test_the_host_role_needs_no_key_and_the_list_says_so(people):
    response = post_provider(client_for(people.olive), region="us-west-2", credential_type="aws_role")
    assert response.status_code == 302, errors(response)
    assert Provider.objects.get(name="cloud").options == {"region": "us-west-2", "credential_type": "aws_role"}
    listing = client_for(people.olive).get(reverse("providers:list")).content.decode()
    row = listing[listing.index(">cloud<"):]
    assert "AWS Bedrock" in row[:400] and "not needed" in row[:1200]


@pytest.fixture(scope="module")
def bedrock_fake():
    server = FakeBedrockServer().start()
    yield server
    server.stop()


def test_test_connection_reaches_bedrock_signed_and_names_a_refused_port(people, bedrock_fake):
    bedrock_fake.reset()
    provider = Provider(name="cloud", kind="bedrock", base_url=bedrock_fake.base_url, options={"region": REGION})
    provider.set_credential(bedrock_fake.credential())
    provider.save()
    olive = client_for(people.olive)
    answer = olive.post(reverse("providers:test", args=["cloud"]), headers={"HX-Request": "true"}).content.decode()
    assert "Connected: amazon.nova-micro-v1:0 answered in" in answer  # no model yet: the kind's default
    assert bedrock_fake.signers[-1]["key"] == ACCESS_KEY_ID
    Provider.objects.filter(pk=provider.pk).update(base_url=f"http://127.0.0.1:{closed_port()}")
    answer = olive.post(reverse("providers:test", args=["cloud"]), headers={"HX-Request": "true"}).content.decode()
    assert "Failed (unavailable)" in answer and "connection refused" in answer


@pytest.mark.browser
def test_the_form_shows_each_kind_its_own_fields_and_the_page_where_calls_go(page, live, world, people):
    log_in(page, "olive")
    page.goto("/dashboard/providers/new/")
    for label in ("Region or location", "Google Cloud project", "Azure API version", "Credential type"):
        expect(page.get_by_label(label)).to_be_hidden()  # openai, the first kind: none of them
    page.get_by_label("Name").fill("vertex-eu")
    page.get_by_label("Kind").select_option("vertex_gemini")
    expect(page.get_by_label("Region or location")).to_be_visible()
    expect(page.get_by_label("Google Cloud project")).to_be_visible()
    expect(page.get_by_label("Azure API version")).to_be_hidden()
    page.get_by_label("Kind").select_option("bedrock")
    expect(page.get_by_label("Google Cloud project")).to_be_hidden()
    expect(page.get_by_label("Credential type")).to_be_visible()
    page.get_by_label("Kind").select_option("vertex_gemini")
    page.get_by_label("Region or location").fill("europe-west4")
    page.get_by_label("Google Cloud project").fill("acme-ml-prod")
    page.get_by_label("API key", exact=True).fill("ya29.a-browser-token")
    page.get_by_role("button", name="Create provider").click()
    expect(page.locator(".messages")).to_contain_text("Provider 'vertex-eu' created.")
    facts = page.get_by_test_id("cloud-facts")
    expect(facts).to_contain_text("https://europe-west4-aiplatform.googleapis.com")
    expect(facts).to_contain_text("acme-ml-prod")
    expect(page.get_by_label("Region or location")).to_have_value("europe-west4")
    assert "ya29.a-browser-token" not in page.content()
    screenshot(page, "provider-vertex")
    provider = Provider.objects.get(name="vertex-eu")
    assert provider.options == {"project": "acme-ml-prod", "region": "europe-west4"}
    assert provider.get_credential() == "ya29.a-browser-token"


def test_a_bedrock_provider_may_assume_a_role_named_by_a_valid_arn(people):
    olive = client_for(people.olive)
    response = post_provider(olive, region="eu-central-1", credential=AWS_KEYS, role_arn="bedrock-caller")
    assert "role ARN looks like" in errors(response)["role_arn"][0]
    role = "arn:aws:iam::210987654321:role/bedrock-caller"
    response = post_provider(olive, region="eu-central-1", credential=AWS_KEYS, role_arn=role, external_id="ep-42")
    assert response.status_code == 302, errors(response)
    assert Provider.objects.get(name="cloud").options == {"region": "eu-central-1", "role_arn": role,
                                                          "external_id": "ep-42"}
    page = olive.get(reverse("providers:edit", args=["cloud"])).content.decode()
    assert f"the role {role}, assumed with AWS access keys" in page


def test_an_sts_endpoint_at_a_metadata_address_is_refused(people):
    response = post_provider(client_for(people.ada), region="eu-central-1", credential=AWS_KEYS,
                             options='{"sts_endpoint_url": "http://169.254.169.254/"}')
    assert response.status_code == 400
    assert "sts_endpoint_url" in errors(response)["options"][0]


def test_the_cloud_fields_leave_other_kinds_options_alone(people):
    # `project` in an openai provider's options is its OpenAI project, set by an admin in the JSON.
    provider = Provider.objects.create(name="cloud", kind="openai", options={"project": "proj_abc"})
    response = client_for(people.ada).post(reverse("providers:edit", args=["cloud"]), {
        "name": "cloud", "kind": "openai", "connect_timeout": 5, "read_timeout": 60, "enabled": "on",
        "project": "", "region": "eu-west-1", "options": '{"project": "proj_abc"}'})
    assert response.status_code == 302, errors(response)
    provider.refresh_from_db()
    assert provider.options == {"project": "proj_abc"}


def test_the_django_admin_applies_the_same_checks(people):
    ada = client_for(people.ada)
    response = ada.post(reverse("admin:providers_provider_add"), {
        "name": "cloud", "kind": "vertex_gemini", "connect_timeout": 5, "read_timeout": 60, "enabled": "on",
        "options": '{"project": "p-1", "region": "us-east5"}',
        "credential": service_account_json("http://169.254.169.254/token"),
        "models-TOTAL_FORMS": 0, "models-INITIAL_FORMS": 0})
    assert response.status_code == 200  # the form again, with its error
    assert "token_uri is refused" in response.content.decode()
    assert not Provider.objects.filter(name="cloud").exists()
