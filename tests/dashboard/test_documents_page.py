"""The documents page: operators upload, list and delete what the search tool reads."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import AuditEntry
from tools.models import Document
from tools.search import documents_search
from tools.services import MAX_DOCUMENT_BYTES

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/dashboard/documents/"


def test_an_operator_uploads_a_markdown_file_the_search_then_finds(people, world):
    client = client_for(people.olive)
    upload = SimpleUploadedFile("release-runbook.md", b"# Releases\nTag, then deploy the canary first.",
                                content_type="text/markdown")
    response = client.post(URL, {"team": world.red.id, "file": upload, "title": ""})
    assert response.status_code == 302
    document = Document.objects.get()
    assert (document.title, document.team, document.content) == ("release-runbook", world.red,
                                                                 "# Releases\nTag, then deploy the canary first.")
    entry = AuditEntry.objects.get(action="document.create")
    assert entry.actor_name == "olive" and "release-runbook" in entry.summary and "team red" in entry.summary
    assert [h.id for h in documents_search(team_id=world.red.id, text="canary")] == [document.id]
    assert documents_search(team_id=world.blue.id, text="canary") == []
    page = client.get(URL)
    assert page.status_code == 200 and "release-runbook" in page.content.decode()


def test_pasted_text_is_shared_when_no_team_is_chosen(people, world):
    client = client_for(people.olive)
    assert client.post(URL, {"title": "Style", "text": "Small functions.", "team": ""}).status_code == 302
    assert Document.objects.get().team is None
    assert documents_search(team_id=world.blue.id, text="functions")


@pytest.mark.parametrize("fields, says", [
    ({"title": "x"}, "Upload a file or paste the text"),
    ({"text": "no title here"}, "Give pasted text a title"),
    ({"file": ("logo.png", b"\x89PNG")}, "is not a text or Markdown file"),
    ({"file": ("latin.txt", "café".encode("latin-1"))}, "is not UTF-8 text"),
    ({"file": ("big.md", b"x" * (MAX_DOCUMENT_BYTES + 1))}, "at most"),
    ({"title": "big", "text": "x" * (MAX_DOCUMENT_BYTES + 1)}, "at most"),
    ({"title": "nul", "text": "a\x00b"}, "Null characters are not allowed"),
    ({"file": ("nul.txt", b"a\x00b")}, "NUL characters"),
])
def test_what_is_not_text_or_too_big_is_refused_with_a_reason(people, fields, says):
    if "file" in fields:
        name, content = fields["file"]
        fields = {**fields, "file": SimpleUploadedFile(name, content)}
    response = client_for(people.olive).post(URL, fields)
    assert response.status_code == 400 and says in response.content.decode()
    assert not Document.objects.exists() and not AuditEntry.objects.filter(action="document.create").exists()


def test_an_operator_deletes_a_document_and_it_is_audited(people, world):
    document = Document.objects.create(team=world.red, title="Old", content="stale words")
    response = client_for(people.olive).post(f"{URL}{document.id}/delete/")
    assert response.status_code == 302 and not Document.objects.exists()
    entry = AuditEntry.objects.get(action="document.delete")
    assert entry.before == {"title": "Old", "team": "red", "bytes": 11}
    assert documents_search(team_id=world.red.id, text="stale") == []


@pytest.mark.parametrize("who", ["rita", "max"])
def test_only_operators_may_see_or_change_documents(people, world, who):
    document = Document.objects.create(team=world.red, title="Kept", content="x")
    client = client_for(getattr(people, who))
    assert client.get(URL).status_code == 403
    assert client.post(f"{URL}{document.id}/delete/").status_code == 403
    assert Document.objects.filter(pk=document.pk).exists()


@pytest.mark.browser
def test_in_the_browser_an_operator_pastes_uploads_and_deletes(page, live, world, people, tmp_path):
    from playwright.sync_api import expect

    from tests.dashboard.conftest import log_in, screenshot

    log_in(page, "olive")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Documents").click()
    expect(page.get_by_role("cell", name="No documents yet. Upload one below.")).to_be_visible()
    page.get_by_label("Title").fill("Conventions")
    page.get_by_label("Or paste the text").fill("Review every migration twice.")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".messages")).to_contain_text("Document 'Conventions' uploaded")
    runbook = tmp_path / "on-call.md"
    runbook.write_text("# On call\nPage the lead after 15 minutes.")
    page.get_by_label("Team", exact=True).select_option(label="red")
    page.get_by_label("File").set_input_files(str(runbook))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("row", name="on-call")).to_contain_text("red")
    expect(page.get_by_role("row", name="Conventions")).to_contain_text("every team")
    screenshot(page, "documents")
    page.get_by_role("button", name="Delete Conventions").click()
    expect(page.locator(".messages")).to_contain_text("Document 'Conventions' deleted.")
    assert list(Document.objects.values_list("title", flat=True)) == ["on-call"]
