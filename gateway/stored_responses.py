"""Stored Responses API answers: save (and prune), read, delete, per team.

A team only ever sees its own rows: every read and delete is filtered by the
caller's team, so another team's id is the same 404 as an unknown one.
Retention (EP_RESPONSES_RETENTION_DAYS) is enforced twice: reads ignore
expired rows, and each save deletes them, so no sweeper in a lower layer has
to know this model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gateway.models import StoredResponse


@dataclass(frozen=True, slots=True)
class Stored:
    id: str
    team_id: int
    input_items: list[dict]
    body: dict


def _cutoff() -> datetime:
    return timezone.now() - timedelta(days=settings.EP_RESPONSES_RETENTION_DAYS)


def _save(*, response_id: str, team_id: int, previous_response_id: str, input_items: list[dict], body: dict) -> None:
    with transaction.atomic():
        StoredResponse.objects.create(id=response_id, team_id=team_id, previous_response_id=previous_response_id,
                                      input_items=input_items, body=body)
        # An indexed range that is almost always empty: cheap enough on every write.
        StoredResponse.objects.filter(created_at__lt=_cutoff()).delete()


def _get(*, response_id: str, team_id: int) -> Stored | None:
    row = StoredResponse.objects.filter(id=response_id, team_id=team_id, created_at__gte=_cutoff()).first()
    return Stored(row.id, row.team_id, row.input_items, row.body) if row else None


def _delete(*, response_id: str, team_id: int) -> bool:
    deleted, _ = StoredResponse.objects.filter(id=response_id, team_id=team_id, created_at__gte=_cutoff()).delete()
    return deleted > 0


async def stored_response_save(*, response_id: str, team_id: int, previous_response_id: str = "",
                               input_items: list[dict], body: dict) -> None:
    await sync_to_async(_save, thread_sensitive=False)(
        response_id=response_id, team_id=team_id, previous_response_id=previous_response_id,
        input_items=input_items, body=body)


async def stored_response_get(*, response_id: str, team_id: int) -> Stored | None:
    return await sync_to_async(_get, thread_sensitive=False)(response_id=response_id, team_id=team_id)


async def stored_response_delete(*, response_id: str, team_id: int) -> bool:
    return await sync_to_async(_delete, thread_sensitive=False)(response_id=response_id, team_id=team_id)
