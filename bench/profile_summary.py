"""Summarize a py-spy collapsed-stack file (`py-spy record -f raw`): where the
CPU went, by inclusive share of named buckets, then the top self frames.

    python bench/profile_summary.py bench/results/profile-*.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# Buckets: (label, substrings any of which in a frame puts the sample there).
# A sample counts once per bucket (inclusive), so shares overlap.
BUCKETS = [
    ("openai SDK (request build, parse, pydantic)", ("openai/", "(openai")),
    ("httpx/httpcore/anyio (upstream HTTP)", ("httpx", "httpcore", "anyio")),
    ("asgiref sync_to_async / thread hops", ("asgiref/sync.py", "concurrent/futures", "threading.py")),
    ("Django ORM + DB driver", ("django/db/", "sqlite3", "psycopg")),
    ("budget ledger (reserve/settle)", ("budgets/ledger.py",)),
    ("Django handler + middleware", ("django/core/handlers", "django/middleware", "django/contrib/sessions",
                                     "django/contrib/auth/middleware", "django/contrib/messages", "django_htmx",
                                     "django/utils/deprecation.py")),
    ("django-ninja (routing, auth, pydantic in)", ("ninja/",)),
    ("gateway request core", ("gateway/pipeline.py", "gateway/relay.py", "gateway/recording.py", "gateway/routes.py")),
    ("ASGI server (daphne/twisted/uvicorn/granian)", ("daphne", "twisted", "uvicorn", "granian", "h11", "httptools")),
    ("channel layer / events", ("channels", "gateway/events.py")),
    ("redis", ("redis/",)),
]


def summarize(path: str) -> str:
    samples: list[tuple[list[str], int]] = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    total = sum(n for _, n in samples) or 1
    lines = [f"## {path}: {total} samples"]
    for label, needles in BUCKETS:
        hit = sum(n for frames, n in samples if any(any(k in f for k in needles) for f in frames))
        lines.append(f"- {label}: {100 * hit / total:.1f}%")
    selfs: Counter[str] = Counter()
    for frames, n in samples:
        selfs[frames[-1]] += n
    lines.append("top self frames:")
    for frame, n in selfs.most_common(15):
        lines.append(f"  {100 * n / total:5.1f}%  {frame[:150]}")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(arg))
