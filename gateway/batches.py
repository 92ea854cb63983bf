"""Batch jobs' files and batches, per team: the writes and reads behind
`/v1/files` and `/v1/batches` (api/openai_files.py, api/openai_batches.py).
The worker that runs a batch's requests is gateway/batch_worker.py; this
module also holds what both sides need: how a batch moves from status to
status and the results files it leaves.

A team only ever sees its own files and batches: every read is filtered by
the caller's team, so another team's id is the same 404 as an unknown one.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from budgets.ledger_store import money
from budgets.models import Usage
from gateway.call import new_request_id
from gateway.models import Batch, BatchFile, BatchRequest

# A request in one of these states may still change the batch's results.
UNSETTLED = ("pending", "running", "answered")
# Statuses a batch leaves only by being finalized, or cancelled.
ACTIVE = ("validating", "in_progress")
COMPLETION_WINDOW = timedelta(hours=24)  # "24h", the only window OpenAI offers
# The ids (and purposes) this module makes. Anything else a caller sends is no
# file or batch of ours, and never reaches a query (PostgreSQL refuses a NUL in one: a 500).
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _ours(name: str | None) -> bool:
    return bool(name) and NAME.fullmatch(name) is not None


def missing(kind: str, name: str) -> str:
    """What to tell a caller whose file or batch id found nothing. A malformed
    id is not echoed: the message ends up on the Usage row, and a NUL or a
    newline must not (gateway/routes.py checks the names it echoes the same way)."""
    if _ours(name):
        return f"No {kind} with id '{name}'."
    return f"No {kind} with that id: it is not an id this gateway makes."


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


# -- files -------------------------------------------------------------------------------


def file_create(*, team_id: int, filename: str, purpose: str, content: str) -> BatchFile:
    return BatchFile.objects.create(id=new_id("file-"), team_id=team_id, filename=filename[:255], purpose=purpose,
                                    bytes=len(content.encode()), content=content)


def file_get(*, team_id: int, file_id: str, with_content: bool = False) -> BatchFile | None:
    if not _ours(file_id):
        return None
    files = BatchFile.objects.filter(id=file_id, team_id=team_id)
    return (files if with_content else files.defer("content")).first()


def files_list(*, team_id: int, purpose: str | None, after: str | None, limit: int,
               order: str) -> list[BatchFile]:
    """A page of the team's files, newest first unless `order` is "asc";
    `after` is the id the previous page ended with."""
    files = BatchFile.objects.filter(team_id=team_id).defer("content")
    if purpose and not _ours(purpose):
        return []
    if purpose:
        files = files.filter(purpose=purpose)
    files = _after(files, after, team_id=team_id, model=BatchFile, ascending=order == "asc")
    ordering = ("created_at", "id") if order == "asc" else ("-created_at", "-id")
    return list(files.order_by(*ordering)[:limit])


def file_delete(*, team_id: int, file_id: str) -> bool:
    if not _ours(file_id):
        return False
    deleted, _ = BatchFile.objects.filter(id=file_id, team_id=team_id).delete()
    return deleted > 0


def _after(rows, after: str | None, *, team_id: int, model, ascending: bool = False):
    """Rows past the cursor row `after` (an id of the same team) in the listing order."""
    if not after:
        return rows
    if not _ours(after):
        return rows.none()
    cursor = model.objects.filter(id=after, team_id=team_id).values("created_at", "id").first()
    if cursor is None:
        return rows.none()
    if ascending:
        return rows.filter(Q(created_at__gt=cursor["created_at"]) | Q(created_at=cursor["created_at"], id__gt=after))
    return rows.filter(Q(created_at__lt=cursor["created_at"]) | Q(created_at=cursor["created_at"], id__lt=after))


# -- batches -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of an input file, as the API parsed and checked it."""

    line: int  # 1-based, as editors and OpenAI's errors count
    custom_id: str
    url: str
    body: dict


def batch_create(*, team_id: int, api_key_id: int, input_file_id: str, endpoint: str, lines: list[BatchLine],
                 errors: list[dict], metadata: dict | None) -> Batch:
    """A batch of `lines`, waiting for a worker (`validating`); or, when the
    input did not validate, a `failed` batch carrying `errors`, as OpenAI does."""
    now = timezone.now()
    batch = Batch(id=new_id("batch_"), team_id=team_id, api_key_id=api_key_id, endpoint=endpoint,
                  input_file_id=input_file_id, metadata=metadata, created_at=now, expires_at=now + COMPLETION_WINDOW)
    if errors:
        batch.status, batch.failed_at, batch.errors = "failed", now, errors
        batch.save()
        return batch
    with transaction.atomic():
        batch.save()
        BatchRequest.objects.bulk_create(
            [BatchRequest(batch=batch, line=line.line, custom_id=line.custom_id, body=line.body,
                          request_id=new_request_id()) for line in lines], batch_size=1000)
    return batch


def batch_get(*, team_id: int, batch_id: str) -> Batch | None:
    if not _ours(batch_id):
        return None
    return Batch.objects.filter(id=batch_id, team_id=team_id).first()


def batches_list(*, team_id: int, after: str | None, limit: int) -> list[Batch]:
    batches = _after(Batch.objects.filter(team_id=team_id), after, team_id=team_id, model=Batch)
    return list(batches.order_by("-created_at", "-id")[:limit])


def batch_cancel(*, team_id: int, batch_id: str) -> Batch | None:
    """Stop a batch: requests not started are cancelled at once, those running
    finish (and are billed); the batch is `cancelling` until they have, then
    `cancelled` with the results so far. A finished batch is left as it is."""
    if batch_get(team_id=team_id, batch_id=batch_id) is None:
        return None
    with transaction.atomic():
        if Batch.objects.filter(id=batch_id, status__in=ACTIVE).update(status="cancelling",
                                                                        cancelling_at=timezone.now()):
            BatchRequest.objects.filter(batch_id=batch_id, state="pending").update(state="cancelled")
    batch_settle(batch_id)  # nothing in flight: cancelled at once
    return batch_get(team_id=team_id, batch_id=batch_id)


def request_counts(batch_ids: list[str]) -> dict[str, dict[str, int]]:
    """OpenAI's request_counts per batch: total, completed (answered with 200),
    failed (answered with an error); cancelled or expired requests count in total only."""
    rows = (BatchRequest.objects.filter(batch_id__in=batch_ids).values("batch_id")
            .annotate(total=Count("id"), completed=Count("id", filter=Q(state="done", status_code=200)),
                      failed=Count("id", filter=Q(state="done") & ~Q(status_code=200))))
    counts = {batch_id: {"total": 0, "completed": 0, "failed": 0} for batch_id in batch_ids}
    for row in rows:
        counts[row["batch_id"]] = {"total": row["total"], "completed": row["completed"], "failed": row["failed"]}
    return counts


def batches_usage(batch_ids: list[str]) -> dict[str, dict]:
    """OpenAI's `usage` per batch: the tokens of its requests' Usage rows so far,
    and (ours) what they cost. Matched by request id as well as run id, so a
    live call tagged with a batch's id as its run is not counted."""
    rows = (Usage.objects.filter(run_id__in=batch_ids,
                                 request_id__in=BatchRequest.objects.filter(batch_id__in=batch_ids)
                                 .values("request_id"))
            .values("run_id").annotate(input=Sum("input_tokens"), output=Sum("output_tokens"),
                                       cached=Sum("cached_tokens"), reasoning=Sum("reasoning_tokens"),
                                       cost=Sum("cost_usd")))
    found = {row["run_id"]: row for row in rows}
    return {batch_id: _usage_json(found.get(batch_id, {})) for batch_id in batch_ids}


def _usage_json(row: dict) -> dict:
    tokens = {name: row.get(name) or 0 for name in ("input", "output", "cached", "reasoning")}
    return {"input_tokens": tokens["input"], "input_tokens_details": {"cached_tokens": tokens["cached"]},
            "output_tokens": tokens["output"], "output_tokens_details": {"reasoning_tokens": tokens["reasoning"]},
            "total_tokens": tokens["input"] + tokens["output"],
            "cost_usd": f"{money(row.get('cost')):.8f}"}


# -- how a batch moves on --------------------------------------------------------------


def batches_advance(now: datetime | None = None) -> None:
    """One pass of the state machine, run by every worker on every turn and
    safe to run in several at once (each step is a conditional update):
    validating -> in_progress; past its window, a batch's unstarted requests
    expire; a dead worker's request of a cancelled batch is cancelled; a batch
    with nothing left in flight is finalized."""
    now = now or timezone.now()
    Batch.objects.filter(status="validating").update(status="in_progress", in_progress_at=now)
    BatchRequest.objects.filter(state="pending", batch__status="in_progress", batch__expires_at__lte=now).update(
        state="expired")
    # A dead worker's request of a cancelled batch is not run again: it had no answer, so no row.
    BatchRequest.objects.filter(state="running", lease_until__lt=now, batch__status="cancelling").update(
        state="cancelled", claim="")
    unsettled = BatchRequest.objects.filter(state__in=UNSETTLED).values("batch_id")
    for batch_id in (Batch.objects.filter(status__in=("in_progress", "cancelling", "finalizing"))
                     .exclude(id__in=unsettled).values_list("id", flat=True)):
        batch_settle(batch_id)


def batch_settle(batch_id: str) -> None:
    """Finalize the batch if none of its requests is still in flight: in_progress
    -> finalizing -> completed (or expired), cancelling -> cancelled, each with
    its output and error files. A worker that dies while finalizing leaves the
    batch `finalizing`, which the next pass finishes."""
    if BatchRequest.objects.filter(batch_id=batch_id, state__in=UNSETTLED).exists():
        return
    now = timezone.now()
    Batch.objects.filter(id=batch_id, status="in_progress").update(status="finalizing", finalizing_at=now)
    batch = Batch.objects.filter(id=batch_id, status__in=("finalizing", "cancelling")).first()
    if batch is None:
        return
    if batch.status == "cancelling":
        final = "cancelled"
    else:
        expired = BatchRequest.objects.filter(batch_id=batch_id, state="expired").exists()
        final = "expired" if expired else "completed"
    with transaction.atomic():
        output_id, error_id = _results_files(batch)
        if not Batch.objects.filter(id=batch_id, status=batch.status).update(
                status=final, output_file_id=output_id, error_file_id=error_id, **{f"{final}_at": now}):
            transaction.set_rollback(True)  # another worker finished it first: its files stand


def _results_files(batch: Batch) -> tuple[str, str]:
    """The output file (answers) and the error file (errors, and requests never
    run), in OpenAI's JSONL shape and input order; an empty one is not made."""
    output, errors = [], []
    for item in BatchRequest.objects.filter(batch_id=batch.id).order_by("line").iterator(chunk_size=500):
        line = json.dumps(result_line(item), separators=(",", ":"))
        (output if item.state == "done" and item.status_code == 200 else errors).append(line)
    return _result_file(batch, output, "output"), _result_file(batch, errors, "error")


def _result_file(batch: Batch, lines: list[str], kind: str) -> str:
    if not lines:
        return ""
    return file_create(team_id=batch.team_id, filename=f"{batch.id}_{kind}.jsonl", purpose="batch_output",
                       content="\n".join(lines) + "\n").id


NOT_RUN = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request ran."),
    "expired": ("batch_expired", "The batch's completion window ended before this request ran."),
}


def result_line(item: BatchRequest) -> dict:
    """One line of a results file, as OpenAI writes it."""
    line = {"id": f"batch_req_{item.request_id.removeprefix('req_')}", "custom_id": item.custom_id}
    if item.state in NOT_RUN:
        code, message = NOT_RUN[item.state]
        return line | {"response": None, "error": {"code": code, "message": message}}
    return line | {"response": {"status_code": item.status_code, "request_id": item.request_id,
                                "body": item.response}, "error": None}
