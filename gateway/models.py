"""What the request core keeps beyond the ledger: Responses API answers
(`POST /v1/responses` with `store`), for GET, input_items and previous_response_id;
and the response cache's entries when there is no Redis."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import Team


class StoredResponse(models.Model):
    """One /v1/responses answer, readable by its team only, for
    EP_RESPONSES_RETENTION_DAYS (gateway/stored_responses.py prunes it).

    `input_items` is the whole conversation the model was given (the previous
    response's items and output, then this request's input; never the
    instructions, which OpenAI does not carry over either), so a follow-up
    with previous_response_id reads one row, not the chain.
    """

    id = models.CharField(primary_key=True, max_length=64)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="stored_responses")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    previous_response_id = models.CharField(max_length=64, blank=True)
    input_items = models.JSONField(default=list)
    body = models.JSONField()  # the response object as the client received it

    def __str__(self) -> str:
        return self.id


class CachedAnswer(models.Model):
    """A response cache entry when no Redis is configured (gateway/response_cache.py):
    `key` is the request's sha256 (its team is inside it unless the persona's cache
    is shared); expired rows are ignored on read and deleted on write."""

    key = models.CharField(primary_key=True, max_length=64)
    payload = models.TextField()  # the answer, its usage, provider, model and cost, as JSON
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.key
