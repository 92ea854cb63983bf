"""note_put and note_get: a scratchpad the agents of one run share (per team and run)."""

from __future__ import annotations

import json
from typing import Any

from tools.models import Note
from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError, ToolResult

MAX_VALUE = 20_000
MAX_NOTES_PER_RUN = 200

RUN_ID = {"type": "string", "maxLength": 100, "description": "The run; default: the current one."}
NAME = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[\w.:-]+$",
        "description": "The note's name, e.g. 'decisions' or 'plan.step-2'."}


def _run_of(arguments: dict[str, Any], ctx: ToolContext) -> str:
    run_id = arguments.get("run_id") or ctx.run_id
    if not run_id:
        raise ToolError("Notes belong to a run and this call is not part of one: pass run_id.",
                        code="invalid_arguments")
    return run_id


@builtin_tool(
    "note_put",
    "Write a note to the run's shared scratchpad (replacing one of the same name), for the other agents of "
    "this run to read with note_get. An empty value deletes the note.",
    {"name": NAME, "value": {"type": "string", "maxLength": MAX_VALUE}, "run_id": RUN_ID},
    required=("name", "value"),
)
async def note_put(arguments: dict[str, Any], ctx: ToolContext, server) -> str:
    run_id, name, value = _run_of(arguments, ctx), arguments["name"], arguments["value"]
    notes = Note.objects.filter(team_id=ctx.key.team_id, run_id=run_id)
    if not value:
        deleted, _ = await notes.filter(name=name).adelete()
        return f"Deleted note '{name}'." if deleted else f"There was no note '{name}'."
    if not await notes.filter(name=name).aexists() and await notes.acount() >= MAX_NOTES_PER_RUN:
        raise ToolError(f"This run already has {MAX_NOTES_PER_RUN} notes; overwrite or delete one.",
                        code="limit_reached")
    await Note.objects.aupdate_or_create(team_id=ctx.key.team_id, run_id=run_id, name=name,
                                         defaults={"value": value})
    return f"Saved note '{name}' ({len(value)} characters) in run '{run_id}'."


@builtin_tool(
    "note_get",
    "Read a note from the run's shared scratchpad; without name, the names of all its notes.",
    {"name": NAME, "run_id": RUN_ID},
)
async def note_get(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    run_id = _run_of(arguments, ctx)
    notes = Note.objects.filter(team_id=ctx.key.team_id, run_id=run_id)
    if "name" not in arguments:
        names = [name async for name in notes.values_list("name", flat=True)]
        return ToolResult(json.dumps({"run_id": run_id, "notes": names}), structured={"notes": names})
    note = await notes.filter(name=arguments["name"]).afirst()
    if note is None:
        raise ToolError(f"There is no note '{arguments['name']}' in run '{run_id}'.", code="not_found")
    return ToolResult(note.value, structured={"name": note.name, "value": note.value,
                                              "updated_at": note.updated_at.isoformat()})
