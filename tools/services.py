"""Writes of the tools app that operators make in the dashboard, each with its audit entry."""

from __future__ import annotations

from django.db import transaction

from accounts.audit import audit_record
from accounts.models import Team
from tools.models import Document

# What one document may hold: a long runbook is ~50 kB. PostgreSQL's tsvector of one
# document must stay under 1 MB, and a text of unique words can make one about 3 times
# its size: one document past that would fail every search of its team.
MAX_DOCUMENT_BYTES = 300_000


@transaction.atomic
def document_create(*, actor, team: Team | None, title: str, content: str) -> Document:
    document = Document.objects.create(team=team, title=title, content=content)
    audit_record(actor=actor, action="document.create", target=document,
                 summary=f"Uploaded document '{title}' ({len(content.encode()):,} bytes) for "
                         f"{f'team {team.name}' if team else 'every team'}",
                 after={"title": title, "team": team.name if team else None, "bytes": len(content.encode())})
    return document


@transaction.atomic
def document_delete(*, actor, document: Document) -> None:
    before = {"title": document.title, "team": document.team.name if document.team else None,
              "bytes": len(document.content.encode())}
    audit_record(actor=actor, action="document.delete", target=document,
                 summary=f"Deleted document '{document.title}'", before=before)
    document.delete()
