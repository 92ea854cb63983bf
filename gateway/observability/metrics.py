"""Prometheus metrics, served at GET /metrics (api/metrics.py) (see docs/OBSERVABILITY.md).

What is counted where:
- requests, latency and time to first token, tokens and cost: from each
  request's Usage row, once it is written (`observe_usage`, from usage_record);
- requests in flight: around every API request, until a stream's body closes;
- circuit breakers: `set_breaker_state(provider, model, state)`, called by
  gateway/resilience.py when a breaker moves;
- budget utilization: read from the budget counters at scrape time;
- the ledger's spool (settlements waiting for the database, budgets/spool.py):
  read from its directory at scrape time, so every process reports the same.

Several processes: with PROMETHEUS_MULTIPROC_DIR set, every process writes its
samples to files there and /metrics, in whichever process answers, adds them up
(prometheus-client's multiprocess mode; the directory must be set before
prometheus_client is imported, which settings.py ensures, being read first).
Each process prepares the directory when it starts (`prepare_multiproc_dir`):
created if missing; emptied if no live process still owns files in it (a fresh
deployment starts from zero); otherwise only the live gauges of dead processes
are dropped, while their counters stay, so totals never go backwards.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from budgets import spool
from budgets.models import Budget, BudgetCounter
from budgets.periods import period_start

log = logging.getLogger("gateway.observability.metrics")

_PID_FILE = re.compile(r"_(\d+)\.(?:db|pid)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def prepare_multiproc_dir(path: str | Path) -> None:
    """Make `path` ready for this process (see the module docstring). Safe when
    several processes start at once: they take turns under a file lock, and each
    leaves a marker file so the next one sees it alive before it wrote a sample."""
    from prometheus_client import multiprocess

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        owners = {int(m.group(1)) for f in directory.iterdir() if (m := _PID_FILE.search(f.name))}
        others = owners - {me}
        if not any(_alive(pid) for pid in others):
            for file in directory.iterdir():
                if file.name != ".lock":
                    file.unlink(missing_ok=True)
        else:
            for pid in others:
                if not _alive(pid):
                    multiprocess.mark_process_dead(pid, str(directory))  # its live gauges
                    (directory / f"process_{pid}.pid").unlink(missing_ok=True)
        (directory / f"process_{me}.pid").write_text(str(me))


MULTIPROC_DIR = settings.PROMETHEUS_MULTIPROC_DIR
if MULTIPROC_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = MULTIPROC_DIR
    prepare_multiproc_dir(MULTIPROC_DIR)

# After the directory is ready: prometheus_client reads PROMETHEUS_MULTIPROC_DIR on import.
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

# In multiprocess mode samples live in the files; the metric objects register nowhere.
_registry = None if MULTIPROC_DIR else CollectorRegistry()

LABELS = ("persona", "provider", "model")
# LLM calls take seconds to minutes; a first token, tens of ms to seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)

REQUESTS = Counter("ep_requests", "Requests through the gateway (one per Usage row), by outcome.",
                   (*LABELS, "status", "code", "endpoint"), registry=_registry)
LATENCY = Histogram("ep_request_duration_seconds", "Time from authentication to the last byte or refusal.",
                    (*LABELS, "status"), buckets=LATENCY_BUCKETS, registry=_registry)
TTFT = Histogram("ep_time_to_first_token_seconds", "Time to the first token (streams) or the answer.",
                 LABELS, buckets=TTFT_BUCKETS, registry=_registry)
TOKENS = Counter("ep_tokens", "Tokens, by type: input (cached included), output, cached, reasoning.",
                 (*LABELS, "type"), registry=_registry)
COST = Counter("ep_cost_usd", "What the requests cost, in US dollars.", LABELS, registry=_registry)
IN_FLIGHT = Gauge("ep_requests_in_flight", "API requests being served now (streams until their end).",
                  registry=_registry, multiprocess_mode="livesum")
BREAKER = Gauge("ep_breaker_state", "Circuit breaker of a provider and model: 0 closed, 1 half-open, 2 open.",
                ("provider", "model"), registry=_registry, multiprocess_mode="livemax")

# The garbage collector stops the whole process while it runs: a young
# collection for a millisecond or so, a full one for as long as it takes to
# walk every live object (hundreds of ms with thousands of open streams).
GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
GC_PAUSES = Histogram("ep_gc_pause_seconds", "Garbage collections of the serving processes, by generation "
                      "(2: full), and how long each stopped the process.", ("generation",),
                      buckets=GC_PAUSE_BUCKETS, registry=_registry)
GC_COLLECTED = Counter("ep_gc_collected_objects", "Objects the garbage collector freed, by generation: garbage "
                       "in reference cycles, which reference counting alone cannot free.", ("generation",),
                       registry=_registry)

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
# A direct `provider/model` call names its model freely: past this many distinct
# models, new ones count as "other" so a caller cannot explode the series.
MAX_MODELS = 500
_models_seen: set[str] = set()


def _model_label(model: str) -> str:
    if model in _models_seen or len(_models_seen) < MAX_MODELS:
        _models_seen.add(model)
        return model
    return "other"


# The labelled series each request counts in, found once: prometheus-client's
# `labels()` checks and converts the values and takes a lock on every call
# (~1.4% of a request's CPU for the five or six series of a request). Bounded,
# as the label values are (personas, providers, MAX_MODELS models).
_series: dict[tuple, object] = {}
SERIES_REMEMBERED = 20_000


def _labelled(metric, *values: str):
    key = (metric, values)
    series = _series.get(key)
    if series is None:
        series = metric.labels(*values)
        if len(_series) < SERIES_REMEMBERED:
            _series[key] = series
    return series


def observe_usage(row) -> None:
    """Count one request from its Usage row. Never raises: metrics must not fail a request."""
    try:
        labels = (row.persona, row.provider, _model_label(row.model))
        _labelled(REQUESTS, *labels, row.status, str(row.http_status), row.endpoint).inc()
        _labelled(LATENCY, *labels, row.status).observe(row.latency_ms / 1000)
        if row.ttft_ms is not None:
            _labelled(TTFT, *labels).observe(row.ttft_ms / 1000)
        for kind in ("input", "output", "cached", "reasoning"):
            count = getattr(row, f"{kind}_tokens")
            if count:
                _labelled(TOKENS, *labels, kind).inc(count)
        if row.cost_usd:
            _labelled(COST, *labels).inc(float(row.cost_usd))
        flush_collections()
    except Exception:
        log.warning("could not count request %s in the metrics", getattr(row, "request_id", "?"), exc_info=True)


def set_breaker_state(provider: str, model: str, state: int | str) -> None:
    """For gateway/resilience.py: 0 (or "closed"), 1 ("half_open"), 2 ("open")."""
    value = BREAKER_STATES[state] if isinstance(state, str) else int(state)
    if value not in (0, 1, 2):
        raise ValueError(f"breaker state must be 0, 1 or 2, not {state!r}")
    BREAKER.labels(provider, _model_label(model)).set(value)


# -- garbage collections ---------------------------------------------------------------------


def count_collections() -> None:
    """Count this process's garbage collections into GC_PAUSES and GC_COLLECTED (once per process)."""
    if _note_collection not in gc.callbacks:
        gc.callbacks.append(_note_collection)


_gc_started = [0.0]
# Collections noted, not yet counted. The collector can run on any allocation,
# also inside prometheus-client while it holds its lock (one lock for every
# metric in multiprocess mode), so its callback only appends here (no lock);
# the counting happens later, outside any collection (flush_collections).
_gc_noted: deque = deque(maxlen=10_000)


def _note_collection(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc_noted.append((info["generation"], time.perf_counter() - _gc_started[0], info["collected"]))


def flush_collections() -> None:
    """Count the collections noted since the last flush (after each request, and at a scrape)."""
    while _gc_noted:
        try:
            generation, seconds, collected = _gc_noted.popleft()
        except IndexError:  # another thread took the last one
            return
        _labelled(GC_PAUSES, str(generation)).observe(seconds)
        if collected:
            _labelled(GC_COLLECTED, str(generation)).inc(collected)


# -- in flight -------------------------------------------------------------------------------


class _InFlightBody:
    """A streaming body that leaves the in-flight count once: when its last chunk
    is sent, when it is closed early (the client went away), or when Django
    closes the response, whichever comes first."""

    def __init__(self, content) -> None:
        self.content = content
        self.open = True

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        try:
            async for chunk in self.content:
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            IN_FLIGHT.dec()


def in_flight_enter() -> None:
    IN_FLIGHT.inc()


def in_flight_exit(response=None) -> None:
    """Leave now, or for a stream when its body is closed."""
    if response is not None and getattr(response, "streaming", False) and response.is_async:
        response.streaming_content = _InFlightBody(response.streaming_content)
    else:
        IN_FLIGHT.dec()


# -- budgets, read at scrape time ----------------------------------------------------------


class BudgetCollector:
    """Spend, reservations and limit of each enabled budget in its current period."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["budget", "budget_id", "scope", "period"]
        families = {
            "spent": GaugeMetricFamily("ep_budget_spent_usd", "Spent in the current period.", labels=labels),
            "reserved": GaugeMetricFamily("ep_budget_reserved_usd", "Held by requests in flight.", labels=labels),
            "limit": GaugeMetricFamily("ep_budget_limit_usd", "The budget's limit per period.", labels=labels),
            "ratio": GaugeMetricFamily("ep_budget_utilization_ratio", "Spent / limit (1 = used up).",
                                       labels=labels),
        }
        now = timezone.now()
        budgets = list(Budget.objects.filter(enabled=True).only("id", "name", "scope", "period", "limit_usd"))
        starts = {b.id: period_start(b.period, now) for b in budgets}
        counters = {(c.budget_id, c.period_start): c for c in BudgetCounter.objects.filter(
            budget_id__in=starts, period_start__in=set(starts.values()))}
        for budget in budgets:
            counter = counters.get((budget.id, starts[budget.id]))
            spent = float(counter.spent) if counter else 0.0
            values = [budget.name, str(budget.id), budget.scope, budget.period]
            families["spent"].add_metric(values, spent)
            families["reserved"].add_metric(values, float(counter.reserved) if counter else 0.0)
            families["limit"].add_metric(values, float(budget.limit_usd))
            families["ratio"].add_metric(values, spent / float(budget.limit_usd) if budget.limit_usd else 0.0)
        yield from families.values()


class SpoolCollector:
    """The ledger's spool, shared by the processes of a host: rows waiting for the
    database (alert when above 0 for long), rows set aside (an operator must look)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = spool.stats()
        yield GaugeMetricFamily("ep_ledger_spool_rows", "Settlements waiting in the spool for the database.",
                                value=stats["rows"])
        yield GaugeMetricFamily("ep_ledger_spool_max_rows", "At this many waiting rows no request is admitted.",
                                value=stats["max_rows"])
        yield GaugeMetricFamily("ep_ledger_spool_oldest_age_seconds", "Age of the oldest settlement waiting in the spool.",
                                value=stats["oldest_age_seconds"])
        yield GaugeMetricFamily("ep_ledger_spool_rejected_rows",
                                "Spooled lines set aside: torn, or refused by the database on replay.",
                                value=stats["rejected_rows"])


_exposed = CollectorRegistry()
if MULTIPROC_DIR:
    multiprocess.MultiProcessCollector(_exposed, path=MULTIPROC_DIR)
_budgets = CollectorRegistry()
_budgets.register(BudgetCollector())
_spool = CollectorRegistry()
_spool.register(SpoolCollector())


def exposition() -> tuple[bytes, str]:
    """The scrape body and its content type. Blocking (files, one query): run it in a thread."""
    flush_collections()
    try:
        body = generate_latest(_exposed if MULTIPROC_DIR else _registry) + generate_latest(_spool)
        try:
            body += generate_latest(_budgets)
        except Exception:  # the database is down: the process metrics still answer
            log.warning("budget metrics unavailable", exc_info=True)
    finally:
        connection.close()
    return body, CONTENT_TYPE_LATEST
