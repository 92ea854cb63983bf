"""What the request core keeps beyond the ledger: Responses API answers
(`POST /v1/responses` with `store`), for GET, input_items and previous_response_id;
batch jobs (`/v1/files`, `/v1/batches`) with their files and requests; and the
response cache's entries when there is no Redis."""

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


class BatchFile(models.Model):
    """A file of the Files API (`/v1/files`): a batch's input JSONL, uploaded by
    a team, or the output and error files a finished batch leaves. Readable by
    its team only; kept in the database (EP_BATCH_FILE_MAX_BYTES bounds it)."""

    id = models.CharField(primary_key=True, max_length=64)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="batch_files")
    purpose = models.CharField(max_length=20)  # "batch" (uploaded) or "batch_output" (made by a batch)
    filename = models.CharField(max_length=255)
    bytes = models.PositiveBigIntegerField()
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.id


class Batch(models.Model):
    """A batch job (`/v1/batches`): its input file's requests run through the
    pipeline by `manage.py run_batches` (gateway/batches.py). Timestamps are
    OpenAI's, one per status the batch has reached."""

    STATUSES = ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                "cancelled"]

    id = models.CharField(primary_key=True, max_length=64)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="batches")
    # The key whose requests these are: they run with its scopes, limits and budgets.
    api_key = models.ForeignKey("accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=100)
    input_file_id = models.CharField(max_length=64)
    completion_window = models.CharField(max_length=10, default="24h")
    status = models.CharField(max_length=12, default="validating", db_index=True)
    metadata = models.JSONField(null=True, blank=True)
    errors = models.JSONField(null=True, blank=True)  # validation errors: [{code, message, param, line}]
    output_file_id = models.CharField(max_length=64, blank=True)
    error_file_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.id


class BatchRequest(models.Model):
    """One line of a batch, and where it stands.

    pending -> running (claimed by a worker, under a lease it renews) ->
    answered (the answer and its ledger row saved here) -> done (the row is in
    the ledger). A worker that dies leaves its lease to expire: a `running`
    request is run once more, an `answered` one only has its saved row written
    (skipped if the ledger already has it), so no request is billed twice.
    `cancelled` / `expired`: never run.
    """

    STATES = ["pending", "running", "answered", "done", "cancelled", "expired"]

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="requests")
    line = models.PositiveIntegerField()
    custom_id = models.CharField(max_length=100)
    body = models.JSONField()
    request_id = models.CharField(max_length=64)  # the Usage row's, the same on every attempt
    state = models.CharField(max_length=10, default="pending")
    claim = models.CharField(max_length=64, blank=True)  # the worker holding it
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)  # the answer's body, or the error envelope
    ledger_line = models.TextField(blank=True)  # the Usage row while it waits for the ledger (spool format)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "line"], name="one_request_per_batch_line")]
        indexes = [models.Index(fields=["state", "lease_until"], name="batch_request_claim_idx"),
                   models.Index(fields=["batch", "state"], name="batch_request_state_idx")]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.custom_id}"


class CachedAnswer(models.Model):
    """A response cache entry when no Redis is configured (gateway/response_cache.py):
    `key` is the request's sha256 (its team is inside it unless the persona's cache
    is shared); expired rows are ignored on read and deleted on write."""

    key = models.CharField(primary_key=True, max_length=64)
    payload = models.TextField()  # the answer, its usage, provider, model and cost, as JSON
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.key
