"""A Hive-style team workflow through the Execution Platform:
architect -> developer -> reviewer, each step's answer feeding the next.

    pip install ./clients/python          # the client, ep_client (the platform's `make run` installs it)
    export EP_API_KEY=$(python manage.py create_api_key --team hive --name example)
    python examples/team_run.py --base-url http://localhost:8000

Works with no provider keys: `python manage.py bootstrap` routes the demo
personas to the built-in demo provider. All three requests carry one run id
(printed), so the run shows up in GET /api/v1/runs/<run id> with its cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

try:
    from ep_client import ChatResponse, ExecutionPlatformClient, ExecutionPlatformError, new_run_id
except ImportError:  # not installed: run from a checkout, use the package's source next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python" / "src"))
    from ep_client import ChatResponse, ExecutionPlatformClient, ExecutionPlatformError, new_run_id

DEFAULT_TASK = "Design a URL shortener service with an HTTP API, persistent storage and click statistics."

# (step name, persona, how the previous answer becomes this step's prompt)
STEPS = (
    ("design", "architect", "{task}"),
    ("implement", "developer", "Implement this design:\n\n{previous}"),
    ("review", "reviewer", "Review this implementation and list any bugs:\n\n{previous}"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("EP_BASE_URL", "http://localhost:8000"))
    parser.add_argument("--api-key", default=None, help="default: the EP_API_KEY environment variable")
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--run-id", default=None, help="default: a new one")
    return parser.parse_args(argv)


def run_team(client: ExecutionPlatformClient, task: str) -> list[tuple[str, str, ChatResponse]]:
    """Each step's answer is the next step's input; every request carries the client's run id."""
    results, previous = [], ""
    for number, (step, persona, template) in enumerate(STEPS, start=1):
        prompt = template.format(task=task, previous=previous)
        response = client.chat(prompt, persona=persona, step=step)
        print_step(number, step, persona, response)
        results.append((step, persona, response))
        previous = response.text
    return results


def print_step(number: int, step: str, persona: str, response: ChatResponse) -> None:
    usage = response.usage
    print(f"[{number}/{len(STEPS)}] {step} by {persona}: {response.provider}/{response.model}, "
          f"{usage.input_tokens} in / {usage.output_tokens} out tokens, ${response.cost_usd}")
    print(textwrap.indent(response.text, "    "), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = args.run_id or new_run_id()
    print(f"Run {run_id} against {args.base_url}: {' -> '.join(p for _, p, _ in STEPS)}")
    try:
        with ExecutionPlatformClient(args.base_url, api_key=args.api_key, run_id=run_id) as client:
            results = run_team(client, args.task)
    except ExecutionPlatformError as error:
        print(f"The run stopped: {error}", file=sys.stderr)
        return 1
    # Decimal, as the platform bills: a float sum would drift from the ledger's.
    total = sum((r.cost_usd or Decimal(0) for _, _, r in results), Decimal(0))
    print(f"Total: {len(results)} steps, ${total} (run {run_id}; see GET /api/v1/runs/{run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
