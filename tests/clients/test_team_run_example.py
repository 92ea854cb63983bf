"""examples/team_run.py, run as a user runs it (a subprocess) against the live
gateway: its run appears in the ledger and in GET /api/v1/runs/{id} with the
total it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal

import httpx

from budgets.models import Usage
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "team_run.py"
STEP_LINE = re.compile(r"^\[(\d)/3\] (\w+) by (\w+): demo/demo, (\d+) in / (\d+) out tokens, \$([0-9.]+)$")


def run_example(live, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}  # as a user runs it: the client is the installed ep_client package
    env.pop("EP_API_KEY", None)
    if key:
        env["EP_API_KEY"] = key
    return subprocess.run([sys.executable, str(EXAMPLE), "--base-url", live.url, *args], cwd=ROOT.parent, env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def parse(stdout: str) -> tuple[str, list[dict], Decimal]:
    lines = stdout.splitlines()
    run_id = re.match(r"^Run (\S+) against ", lines[0]).group(1)
    steps, answer_of = [], None
    for line in lines[1:-1]:
        if match := STEP_LINE.match(line):
            steps.append({"step": match[2], "persona": match[3], "input_tokens": int(match[4]),
                          "output_tokens": int(match[5]), "cost": Decimal(match[6]), "answer": ""})
            answer_of = steps[-1]
        else:
            answer_of["answer"] += line.removeprefix("    ") + "\n"
    total = re.match(rf"^Total: 3 steps, \$([0-9.]+) \(run {run_id};", lines[-1]).group(1)
    return run_id, steps, Decimal(total)


def test_the_team_run_example_appears_as_one_run_with_its_printed_cost(live, world):
    done = run_example(live, key=world.red_key)
    assert done.returncode == 0, done.stderr
    run_id, steps, total = parse(done.stdout)

    assert [(s["step"], s["persona"]) for s in steps] == [
        ("design", "architect"), ("implement", "developer"), ("review", "reviewer")]
    assert total == sum(s["cost"] for s in steps) > 0
    # Each step's prompt is the previous answer: the demo quotes the start of its prompt.
    assert steps[0]["answer"][:40] in steps[1]["answer"]
    assert steps[1]["answer"][:40] in steps[2]["answer"]

    rows = list(Usage.objects.filter(run_id=run_id).order_by("created_at", "id"))
    assert [(r.step, r.persona, r.status, r.team) for r in rows] == [
        ("design", "architect", "ok", world.red), ("implement", "developer", "ok", world.red),
        ("review", "reviewer", "ok", world.red)]
    assert [r.cost_usd for r in rows] == [s["cost"] for s in steps]
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(s["input_tokens"], s["output_tokens"]) for s in steps]

    run = httpx.get(f"{live.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {world.red_key}"}).json()
    assert Decimal(run["cost_usd"]) == total
    assert (run["status"], run["request_count"], run["personas"]) == ("ok", 3, ["architect", "developer", "reviewer"])
    assert [Decimal(s["cost_usd"]) for s in run["steps"]] == [s["cost"] for s in steps]


def test_the_example_takes_the_key_as_an_argument_and_a_given_run_id(live, world):
    done = run_example(live, "--api-key", world.blue_key, "--run-id", "run_given", "--task", "Plan a CLI")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Run run_given against ")
    assert set(Usage.objects.values_list("run_id", "team__name")) == {("run_given", "blue")}


def test_the_example_reports_a_refused_key_plainly(live, world):
    done = run_example(live, key="ep-not-a-real-key")
    assert done.returncode == 1
    assert "The run stopped: invalid_api_key" in done.stderr
    assert "Traceback" not in done.stderr
