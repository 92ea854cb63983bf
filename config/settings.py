"""Settings, all from the environment (see platform/env.example).

Defaults give a working single-process development setup: SQLite, in-memory
channel layer and local-memory cache. `REDIS_URL` switches the channel layer,
cache and cross-process limits to Redis; `DATABASE_URL` picks the database.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Management commands that serve requests: they never get the development secret.
SERVING_COMMANDS = frozenset({"runserver", "runworker", "testserver"})


def checkout_command() -> bool:
    """A management command, not a server, run through this checkout's manage.py
    against the checkout's own SQLite database (no DATABASE_URL): the development
    setup `make run` serves with DEBUG=1 and the development secret. Such a
    command gets that same secret, so `.venv/bin/python manage.py ...` runs as
    the README writes it; a server, or any other database, still needs SECRET_KEY."""
    argv = sys.argv
    return (len(argv) > 1 and Path(argv[0]).resolve() == BASE_DIR / "manage.py"
            and argv[1] not in SERVING_COMMANDS and not os.environ.get("DATABASE_URL"))


DEBUG = envbool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY:
    if not DEBUG and not checkout_command():
        # A missing or well-known secret would let anyone forge sessions and
        # decrypt provider credentials derived from it: never run like that.
        raise ImproperlyConfigured(
            "SECRET_KEY is missing or is the development default; set SECRET_KEY (or DEBUG=1 for development)."
        )
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if not DEBUG else "*")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "django_htmx",
    "template_partials",
    # django-ninja as an app: /api/docs then renders Swagger UI from ninja's own
    # static files instead of a CDN (which the CSP blocks and offline hosts cannot reach).
    "ninja",
    "accounts",
    "providers",
    "personas",
    "budgets",
    "tools",
    "gateway",
    "dashboard",
]

MIDDLEWARE = [
    "api.middleware.LedgerMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security_headers.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into the locked page
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# -- database ------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the dashboard read while the gateway writes; IMMEDIATE makes
        # a writing transaction take the lock up front instead of failing later
        # with "database is locked" when it upgrades from read to write.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- cache and channel layer ------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# -- auth, sessions, security ------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
# Login throttling (django-axes), for the dashboard's /login/ and /admin/login/:
# after EP_LOGIN_FAILURE_LIMIT failed log-ins for one username (from any address),
# or from one address (for any username), logging in is refused for
# EP_LOGIN_LOCKOUT_MINUTES after the last try, even with the right password.
# `manage.py axes_reset` (or deleting the rows under "Access attempts" in the
# admin) unlocks sooner. The attempts are rows in the database, so every
# process and host counts them together, with or without Redis.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = envint("EP_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("EP_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
AXES_LOCKOUT_CALLABLE = "dashboard.views.login_locked"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG and envbool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# Request bodies: chat requests with images can be large, but not unbounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("EP_MAX_BODY_BYTES", 8 * 1024 * 1024)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# -- the gateway's own knobs --------------------------------------------------------
# Key for provider credentials at rest; comma-separated for rotation (the first
# encrypts, all decrypt). Falls back to one derived from SECRET_KEY.
EP_ENCRYPTION_KEYS = envlist("EP_ENCRYPTION_KEYS", "")
# How long a process may serve keys/personas/routes from memory before it
# checks the shared config generation again (0 = check on every request).
EP_CONFIG_CHECK_SECONDS = envfloat("EP_CONFIG_CHECK_SECONDS", 1.0)
# Backstop age of the in-memory config; between processes without Redis it is
# the only invalidation, so a change takes up to this long there.
EP_CONFIG_CACHE_SECONDS = envfloat("EP_CONFIG_CACHE_SECONDS", 30.0)
EP_DEFAULT_DEADLINE_SECONDS = envfloat("EP_DEFAULT_DEADLINE_SECONDS", 120.0)
# Resilience defaults; each can be overridden per provider (options) or per
# route step (params) under the lower-case name in parentheses.
EP_RETRY_ATTEMPTS = envint("EP_RETRY_ATTEMPTS", 2)  # (max_attempts) per step, first try included
EP_RETRY_BASE_SECONDS = envfloat("EP_RETRY_BASE_SECONDS", 0.25)
EP_RETRY_MAX_BACKOFF_SECONDS = envfloat("EP_RETRY_MAX_BACKOFF_SECONDS", 4.0)
EP_RETRY_AFTER_CAP_SECONDS = envfloat("EP_RETRY_AFTER_CAP_SECONDS", 10.0)  # (retry_after_cap)
# A breaker opens when, of the calls that ended in its window, at least MIN_CALLS
# did and at least FAILURE_RATIO of them failed (gateway/breakers.py has the rule).
EP_BREAKER_WINDOW_SECONDS = envfloat("EP_BREAKER_WINDOW_SECONDS", 30.0)  # (breaker_window_seconds)
EP_BREAKER_MIN_CALLS = envint("EP_BREAKER_MIN_CALLS", 20)  # (breaker_min_calls)
EP_BREAKER_FAILURE_RATIO = envfloat("EP_BREAKER_FAILURE_RATIO", 0.5)  # (breaker_failure_ratio)
EP_BREAKER_COOLDOWN_SECONDS = envfloat("EP_BREAKER_COOLDOWN_SECONDS", 30.0)  # (breaker_cooldown_seconds)
# With Redis, how long a process trusts a "closed" breaker verdict before asking again.
EP_BREAKER_SHARED_CHECK_SECONDS = envfloat("EP_BREAKER_SHARED_CHECK_SECONDS", 1.0)
# Live events leave each process in batches, this often (gateway/events.py).
EP_EVENTS_BATCH_SECONDS = envfloat("EP_EVENTS_BATCH_SECONDS", 0.05)
EP_FIRST_TOKEN_TIMEOUT_SECONDS = envfloat("EP_FIRST_TOKEN_TIMEOUT_SECONDS", 60.0)  # (first_token_timeout)
EP_STREAM_IDLE_TIMEOUT_SECONDS = envfloat("EP_STREAM_IDLE_TIMEOUT_SECONDS", 30.0)  # (idle_timeout)
EP_IDEMPOTENCY_TTL_SECONDS = envint("EP_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
EP_MAX_MESSAGES = envint("EP_MAX_MESSAGES", 1000)
# Texts in one /v1/embeddings request (OpenAI accepts 2,048).
EP_MAX_EMBEDDING_INPUTS = envint("EP_MAX_EMBEDDING_INPUTS", 2048)
# Tool definitions in one request (gateway/routes.py tools_limits_check): how many
# (OpenAI's own limit), their total size as JSON, how deep a parameters schema nests.
EP_MAX_TOOLS = envint("EP_MAX_TOOLS", 128)
EP_MAX_TOOLS_BYTES = envint("EP_MAX_TOOLS_BYTES", 256 * 1024)
EP_MAX_TOOL_SCHEMA_DEPTH = envint("EP_MAX_TOOL_SCHEMA_DEPTH", 64)  # JSON levels: objects and arrays
# Provider base URLs on loopback or private addresses (a local vLLM/Ollama, the
# test suite's fakes); off by default so a base URL cannot reach internal
# services. Link-local and cloud metadata addresses are refused either way.
EP_ALLOW_PRIVATE_PROVIDER_URLS = envbool("EP_ALLOW_PRIVATE_PROVIDER_URLS", False)
# A reservation not settled after this long belongs to a dead process: release it.
EP_RESERVATION_TTL_SECONDS = envint("EP_RESERVATION_TTL_SECONDS", 900)
# PostgreSQL: the ledger writer's connection prepares its fixed statements
# (budgets/ledger_store.py); off for a pooler that cannot keep them.
EP_DB_PREPARED_STATEMENTS = envbool("EP_DB_PREPARED_STATEMENTS", True)
# The ledger's spool (budgets/spool.py): settlements the database could not take
# wait here, on local disk, until it is back. Each process appends to its own file.
EP_SPOOL_DIR = os.environ.get("EP_SPOOL_DIR", str(BASE_DIR / "var" / "ledger-spool"))
# At this many waiting rows no new request is admitted (503 ledger_unavailable).
EP_SPOOL_MAX_ROWS = envint("EP_SPOOL_MAX_ROWS", 100_000)
# Output tokens assumed for a call that sets no max_tokens and whose model has no known maximum.
EP_DEFAULT_MAX_OUTPUT_TOKENS = envint("EP_DEFAULT_MAX_OUTPUT_TOKENS", 4096)
# Alert webhooks: HMAC key (defaults to SECRET_KEY) and first retry delay, doubling after.
EP_WEBHOOK_SECRET = os.environ.get("EP_WEBHOOK_SECRET", "")
EP_WEBHOOK_RETRY_SECONDS = envfloat("EP_WEBHOOK_RETRY_SECONDS", 5.0)
# The ledger's daily rollups (budgets/rollups.py): the sweeper rolls up each UTC
# day this long after it ends (a stream settles after its day may have ended),
# checks the last few rolled days for late rows, at most every EP_ROLLUP_SECONDS
# (0: never; `manage.py ledger_rollup` from cron does it instead).
EP_ROLLUP_GRACE_SECONDS = envint("EP_ROLLUP_GRACE_SECONDS", 3600)
EP_ROLLUP_SECONDS = envfloat("EP_ROLLUP_SECONDS", 300.0)
# Raw Usage rows older than this many days are deleted (`manage.py ledger_prune`,
# and the sweeper) once their day is rolled up; costs, budgets and /costs keep
# their totals from the rollups. 0: never (the default). The usage log, a run's
# page and the CSV export need the raw rows, so they end at this horizon.
EP_USAGE_RETENTION_DAYS = envint("EP_USAGE_RETENTION_DAYS", 0)
# How often each process sweeps the webhook queue and expired reservations.
EP_SWEEP_SECONDS = envfloat("EP_SWEEP_SECONDS", 5.0)
# Stored /v1/responses answers (store: true) are kept this many days (OpenAI keeps 30).
EP_RESPONSES_RETENTION_DAYS = envfloat("EP_RESPONSES_RETENTION_DAYS", 30.0)
# Batch jobs (/v1/files, /v1/batches; `manage.py run_batches`, gateway/batch_worker.py).
EP_BATCH_FILE_MAX_BYTES = envint("EP_BATCH_FILE_MAX_BYTES", 50 * 1024 * 1024)  # an input file, stored in the database
EP_BATCH_MAX_REQUESTS = envint("EP_BATCH_MAX_REQUESTS", 50_000)  # requests in one batch, as OpenAI
EP_BATCH_CONCURRENCY = envint("EP_BATCH_CONCURRENCY", 4)  # requests a worker runs at once
# A worker renews its claims every third of this; a claim not renewed for this long is a dead worker's.
EP_BATCH_LEASE_SECONDS = envfloat("EP_BATCH_LEASE_SECONDS", 60.0)
EP_BATCH_POLL_SECONDS = envfloat("EP_BATCH_POLL_SECONDS", 1.0)
# How the worker runs each endpoint's requests: the API's handlers, named here
# because the gateway layer that runs them cannot import the API.
EP_BATCH_HANDLERS = {
    "/v1/chat/completions": "api.batch_lines.chat_line",
    "/v1/embeddings": "api.batch_lines.embeddings_line",
}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / "test-artifacts" / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "execution-platform@localhost")

# -- observability (gateway/observability/metrics.py, tracing.py, logs.py; docs/OBSERVABILITY.md) --------
# GET /metrics answers an API key with the admin scope; EP_METRICS_PUBLIC=1 opens it
# to anyone who can reach the process (a private scrape network).
EP_METRICS_PUBLIC = envbool("EP_METRICS_PUBLIC", False)
# Several gateway processes on one host share metrics through this directory
# (prometheus-client's multiprocess mode); unset, each process counts in memory.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# Traces: off (default), console, or otlp (to OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4318).
EP_TRACING = (os.environ.get("EP_TRACING") or os.environ.get("OTEL_TRACES_EXPORTER") or "off").strip().lower()
# Logs: one JSON object a line (json), or text (plain); json unless DEBUG is on.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain" if DEBUG else "json").strip().lower()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"()": "gateway.observability.logs.PlainFormatter"}, "json": {"()": "gateway.observability.logs.JsonFormatter"}},
    "filters": {"request": {"()": "gateway.observability.logs.RequestContextFilter"}, "redact": {"()": "gateway.observability.logs.RedactFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request", "redact"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # daphne/uvicorn log each request; the gateway writes a Usage row instead.
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        # Every refusal is already a Usage row; a log line per 4xx is noise.
        "django.request": {"level": "ERROR"},
    },
}
