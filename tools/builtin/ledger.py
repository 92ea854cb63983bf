"""run_cost and budget_status: what the caller has spent, from the Usage ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Count, Q, Sum

from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError, ToolResult


@builtin_tool(
    "run_cost",
    "What a workflow run has spent so far: model calls and their cost in USD. "
    "Without run_id, the current run.",
    {"run_id": {"type": "string", "description": "The run to report; default: the current one."}},
)
async def run_cost(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    run_id = arguments.get("run_id") or ctx.run_id
    if not run_id:
        raise ToolError("This call is not part of a run: pass run_id.", code="invalid_arguments")
    totals = await sync_to_async(_run_totals)(run_id, ctx.key.team_id)
    return ToolResult(json.dumps(totals), structured=totals)


def _run_totals(run_id: str, team_id: int) -> dict[str, Any]:
    from budgets.models import Usage

    # Only the caller's team's rows: a run id of another team reads as empty.
    row = Usage.objects.filter(run_id=run_id, team_id=team_id).aggregate(
        calls=Count("id"), cost=Sum("cost_usd"), input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"))
    return {"run_id": run_id, "model_calls": row["calls"], "cost_usd": str(row["cost"] or Decimal(0)),
            "input_tokens": row["input_tokens"] or 0, "output_tokens": row["output_tokens"] or 0}


@builtin_tool(
    "budget_status",
    "The budgets on the caller's team and API key: each one's limit, what is spent in its current period "
    "(USD), the percentage used and whether it refuses requests (hard) or only alerts.",
)
async def budget_status(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    budgets = await sync_to_async(caller_budgets)(team_id=ctx.key.team_id, key_id=ctx.key.id)
    return ToolResult(json.dumps({"budgets": budgets}), structured={"budgets": budgets})


def caller_budgets(*, team_id: int, key_id: int) -> list[dict[str, Any]]:
    """The enabled team and key budgets that apply to the caller. Global and persona
    budgets are left out: their spend is every team's, which one team's agents do not see."""
    from budgets.models import Budget
    from budgets.selectors import BudgetUse, budget_spend

    rows = Budget.objects.filter(Q(scope="team", team_id=team_id) | Q(scope="key", api_key_id=key_id),
                                 enabled=True).order_by("name")
    uses = [BudgetUse(budget, budget_spend(budget)) for budget in rows]
    return [{"name": use.budget.name, "scope": use.budget.scope, "period": use.budget.period,
             "limit_usd": str(use.budget.limit_usd), "spent_usd": str(use.spent), "percent_used": use.percent,
             "hard": use.budget.hard} for use in uses]
