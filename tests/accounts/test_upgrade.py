"""Existing databases upgrade without loss.

The account models (Team, ApiKey, Membership, AuditEntry) moved from `gateway`
to `accounts` with their tables kept, by state-only migrations. These tests
build a database of their own at today's schema with the real `migrate`
command (so the old migrations create it exactly as old code did), put rows
in every table of ours with raw SQL, migrate it to the latest, and find every
row again: by SQL, through the ORM of the new code, and in the content types
and permissions that name the moved models.

Never the test database: a temporary SQLite file, or, when DATABASE_URL names
PostgreSQL, a uniquely named database on that server, dropped at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.apps import apps as django_apps
from django.conf import settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# What existing databases have: the migration state before `accounts` existed.
TODAYS_SCHEMA = [
    ("gateway", "0003_apikey_max_output_tokens"),
    ("budgets", "0005_usage_leaner_indexes"),
    ("personas", "0001_initial"),
    ("providers", "0002_config_generation"),
    ("auth", None),
    ("admin", None),
    ("contenttypes", None),
    ("sessions", None),
]
MOVED = {"team": "team", "apikey": "API key", "membership": "membership", "auditentry": "audit entry"}
MOVED_TABLES = ["gateway_team", "gateway_apikey", "gateway_membership", "gateway_auditentry"]
RAW_KEY = "ep-upgrade-test-key-" + "x" * 32
KEY_HASH = hashlib.sha256(RAW_KEY.encode()).hexdigest()
TEAM_NAME = "Platform — Ünïcode ✓"
LIMIT_USD = "1234.567891"


def our_app_labels() -> list[str]:
    """The project's own apps (not Django's, not third parties'): their tables are `<label>_*`."""
    return sorted(
        config.label for config in django_apps.get_app_configs() if Path(config.path).parent == ROOT
    )


# -- a database of its own -------------------------------------------------------------------


class ScratchDatabase:
    """A database for one test; SQL is written with %s placeholders for both backends."""

    vendor: str
    url: str

    def connect(self):
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def ts(self, text: str) -> str:
        """A UTC timestamp as Django stores it on this backend."""
        return text if self.vendor == "sqlite" else text + "+00:00"

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.vendor == "sqlite" else statement

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        connection = self.connect()
        try:
            return [tuple(row) for row in connection.execute(self.sql(statement), params).fetchall()]
        finally:
            connection.close()

    def tables(self) -> list[str]:
        """The models' tables. On SQLite not a full-text index (an FTS5 virtual table,
        tools/0003) nor the shadow tables SQLite keeps it in, which start with rows of their own."""
        if self.vendor == "sqlite":
            found = self.query("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            virtual = [name for name, sql in found if (sql or "").upper().startswith("CREATE VIRTUAL TABLE")]
            return sorted(name for name, _ in found if not any(name == v or name.startswith(v + "_") for v in virtual))
        statement = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return sorted(name for (name,) in self.query(statement))

    def rows(self, table: str, columns: list[str]) -> list[tuple]:
        named = ", ".join(f'"{c}"' for c in columns)
        return self.query(f'SELECT {named} FROM "{table}" ORDER BY 1')

    def columns(self, table: str) -> list[str]:
        if self.vendor == "sqlite":
            return [row[1] for row in self.query(f'PRAGMA table_info("{table}")')]
        return [name for (name,) in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            f"AND table_name = '{table}' ORDER BY ordinal_position")]

    def counts(self) -> dict[str, int]:
        return {table: self.query(f'SELECT COUNT(*) FROM "{table}"')[0][0] for table in self.tables()}


class SqliteScratch(ScratchDatabase):
    vendor = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"ep_upgrade_{uuid.uuid4().hex[:8]}.sqlite3"
        self.url = f"sqlite:///{self.path}"

    def connect(self):
        import sqlite3

        connection = sqlite3.connect(self.path)
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class PostgresScratch(ScratchDatabase):
    vendor = "postgresql"

    def __init__(self, server: dict) -> None:
        self.server = server
        self.name = f"ep_upgrade_{uuid.uuid4().hex[:12]}"
        user = quote(server.get("USER") or "postgres", safe="")
        password = f":{quote(server['PASSWORD'], safe='')}" if server.get("PASSWORD") else ""
        host = server.get("HOST") or "127.0.0.1"
        port = server.get("PORT") or 5432
        self.url = f"postgres://{user}{password}@{host}:{port}/{self.name}"
        with self._maintenance() as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')

    def _maintenance(self):
        import psycopg

        return psycopg.connect(**self._params("postgres"), autocommit=True)

    def _params(self, dbname: str) -> dict:
        server = self.server
        params = {"dbname": dbname, "user": server.get("USER") or "postgres",
                  "host": server.get("HOST") or "127.0.0.1", "port": server.get("PORT") or 5432}
        if server.get("PASSWORD"):
            params["password"] = server["PASSWORD"]
        return params

    def connect(self):
        import psycopg

        return psycopg.connect(**self._params(self.name), autocommit=True)

    def drop(self) -> None:
        # Only ever the database this object created.
        assert self.name.startswith("ep_upgrade_")
        with self._maintenance() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,))
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}"')


def scratch_database(directory: Path) -> ScratchDatabase:
    server = settings.DATABASES["default"]
    if server["ENGINE"].endswith("sqlite3"):
        return SqliteScratch(directory)
    if server["ENGINE"].endswith("postgresql"):
        return PostgresScratch(server)
    pytest.skip(f"no scratch database for {server['ENGINE']}")


# -- the real management commands, in their own processes ------------------------------------------


def manage(db: ScratchDatabase, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": db.url,
           "DEBUG": "1", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    env.setdefault("SECRET_KEY", "upgrade-test-secret")
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, (
            f"manage.py {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def orm(db: ScratchDatabase, code: str) -> dict:
    """Run `code` in `manage.py shell`; it prints one JSON object as its last line."""
    result = manage(db, "shell", "-c", code)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- rows at today's schema -----------------------------------------------------------------------


def insert(connection, db: ScratchDatabase, table: str, **values) -> int:
    columns = ", ".join(f'"{name}"' for name in values)
    marks = ", ".join(["%s"] * len(values))
    statement = db.sql(f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) RETURNING "id"')
    return connection.execute(statement, tuple(values.values())).fetchone()[0]


def populate(db: ScratchDatabase) -> dict:
    """At least one row in every table of ours, and the auth and content-type rows
    an old database has for the gateway models; returns the ids."""
    ts = db.ts
    ids: dict = {"content_types": {}, "permissions": {}}
    connection = db.connect()

    def add(table: str, **values) -> int:
        return insert(connection, db, table, **values)

    def existing(statement: str, params: tuple) -> int | None:
        rows = connection.execute(db.sql(statement), params).fetchall()
        return rows[0][0] if rows else None

    try:
        user = ids["user"] = add(
            "auth_user", password="!", last_login=None, is_superuser=False, username="ada", first_name="Ada",
            last_name="Lovelace", email="ada@example.com", is_staff=True, is_active=True,
            date_joined=ts("2025-01-02 03:04:05"))
        # Old code had models in `gateway`: its post_migrate made these. The new code
        # (no gateway models any more) does not, so add what is missing as old code would.
        for model, verbose in MOVED.items():
            ct = existing("SELECT id FROM django_content_type WHERE app_label = %s AND model = %s",
                          ("gateway", model)) or add("django_content_type", app_label="gateway", model=model)
            ids["content_types"][model] = ct
            for action in ("add", "change", "delete", "view"):
                codename = f"{action}_{model}"
                ids["permissions"][codename] = existing(
                    "SELECT id FROM auth_permission WHERE content_type_id = %s AND codename = %s",
                    (ct, codename),
                ) or add("auth_permission", name=f"Can {action} {verbose}", content_type_id=ct,
                         codename=codename)
        for codename in ("change_team", "view_apikey"):
            add("auth_user_user_permissions", user_id=user, permission_id=ids["permissions"][codename])
        # gateway 0002 made the operators group; give it a permission on a moved model.
        operators = existing("SELECT id FROM auth_group WHERE name = %s", ("operators",))
        add("auth_group_permissions", group_id=operators, permission_id=ids["permissions"]["view_membership"])
        add("auth_user_groups", user_id=user, group_id=operators)

        team = ids["team"] = add("gateway_team", name=TEAM_NAME, created_at=ts("2025-01-02 03:04:05.123456"))
        other = ids["other_team"] = add("gateway_team", name="blue", created_at=ts("2025-01-03 00:00:00"))
        key = ids["key"] = add(
            "gateway_apikey", team_id=team, name="ci agents", prefix=RAW_KEY[:10], key_hash=KEY_HASH,
            scopes=json.dumps(["chat", "direct"]), created_at=ts("2025-01-02 04:00:00"),
            expires_at=ts("2030-01-01 00:00:00"), revoked_at=None, max_output_tokens=2048)
        ids["revoked_key"] = add(
            "gateway_apikey", team_id=other, name="old", prefix="ep-old0000",
            key_hash=hashlib.sha256(b"old").hexdigest(), scopes=json.dumps(["chat"]),
            created_at=ts("2025-01-03 00:00:00"), expires_at=None, revoked_at=ts("2025-02-01 00:00:00"),
            max_output_tokens=None)
        ids["membership"] = add("gateway_membership", role="lead", team_id=team, user_id=user)
        ids["audit"] = add(
            "gateway_auditentry", at=ts("2025-01-04 10:00:00"), actor_id=user, actor_name="ada",
            action="budget.create", target_type="budget", target_id="1", target_label="platform monthly",
            summary="created", before=None, after=json.dumps({"limit_usd": LIMIT_USD}))
        add("django_admin_log", action_time=ts("2025-01-04 10:00:00"), object_id=str(team),
            object_repr=TEAM_NAME, action_flag=2, change_message="[]",
            content_type_id=ids["content_types"]["team"], user_id=user)

        provider = ids["provider"] = add(
            "providers_provider", name="openai-main", kind="openai", base_url="",
            credential_encrypted="gAAAAA-not-a-real-token", enabled=True, connect_timeout=5.0,
            read_timeout=60.0,
            options=json.dumps({"organization": "org-1"}), updated_at=ts("2025-01-01 00:00:00"))
        add("providers_model", provider_id=provider, name="gpt-4o-mini", input_price="0.150000",
            output_price="0.600000", cached_input_price=None, context_window=128000,
            max_output_tokens=16384, enabled=True, created_at=ts("2025-01-01 00:00:00"))
        add("providers_configgeneration", value=41)
        persona = ids["persona"] = add(
            "personas_persona", slug="architect", name="Architect", description="plans",
            system_prompt="You plan.", default_params=json.dumps({"temperature": 0.2}),
            max_output_tokens=None, enabled=True, updated_at=ts("2025-01-01 00:00:00"),
            created_at=ts("2025-01-01 00:00:00"))
        add("personas_routestep", persona_id=persona, position=0, provider_id=provider, model="gpt-4o-mini",
            params="{}", weight=1, fallback_on_client_error=False)

        budget = ids["budget"] = add(
            "budgets_budget", name="platform monthly", scope="team", period="month", limit_usd=LIMIT_USD,
            hard=True, enabled=True, created_at=ts("2025-01-04 10:00:00"), api_key_id=None,
            persona_id=None, team_id=team, notify_emails="ops@example.com", webhook_url="",
            thresholds=json.dumps([50, 80, 100]))
        ids["key_budget"] = add(
            "budgets_budget", name="ci key daily", scope="key", period="day", limit_usd="5", hard=False,
            enabled=True, created_at=ts("2025-01-04 10:00:00"), api_key_id=key, persona_id=persona,
            team_id=None, notify_emails="", webhook_url="https://hooks.example.com/budget",
            thresholds=json.dumps([100]))
        counter = add("budgets_budgetcounter", budget_id=budget, period_start=ts("2025-01-01 00:00:00"),
                      spent="12.34500000", reserved="0.50000000")
        add("budgets_reservation", request_id="req-2", counter_id=counter, amount="0.50000000",
            expires_at=ts("2025-01-04 10:15:00"))
        add("budgets_ratelimit", team_id=None, api_key_id=key, requests_per_minute=60,
            tokens_per_minute=100000)
        add("budgets_ratelimit", team_id=team, api_key_id=None, requests_per_minute=600,
            tokens_per_minute=None)
        alert = add("budgets_alert", budget_id=budget, threshold=50, period_start=ts("2025-01-01 00:00:00"),
                    message="platform monthly at 50%", created_at=ts("2025-01-04 10:00:00"),
                    acknowledged_at=None)
        add("budgets_webhookdelivery", alert_id=alert, url="https://hooks.example.com/budget",
            payload=json.dumps({"budget": "platform monthly"}), attempts=1,
            next_attempt_at=ts("2025-01-04 10:00:05"), delivered_at=None, last_error="timeout")
        ids["usage"] = add(
            "budgets_usage", request_id="req-1", created_at=ts("2025-01-04 10:00:00"), persona="architect",
            provider="openai-main", model="gpt-4o-mini", endpoint="chat", stream=False, status="ok",
            http_status=200, error_code="", error_message="", input_tokens=1200, output_tokens=345,
            cached_tokens=0, reasoning_tokens=0, cost_usd="0.00038700", latency_ms=812, ttft_ms=120,
            attempts=1, run_id="run-7", step="plan", api_key_id=key, team_id=team, trace_id="",
            attempt_log=json.dumps([{"provider": "openai-main", "model": "gpt-4o-mini", "outcome": "ok"}]))
        if db.vendor == "sqlite":
            connection.commit()
            assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
    return ids


# -- one database at today's schema, filled, then upgraded ---------------------------------------


@dataclass
class Upgrade:
    db: ScratchDatabase
    ids: dict
    ours_before: list[str]
    empty_before: list[str]
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    rows_before: dict[str, list] = field(default_factory=dict)
    rows_after: dict[str, list] = field(default_factory=dict)
    content_types_before: list[tuple] = field(default_factory=list)
    upgrade_output: str = ""


# Tables whose rows the upgrade may change: the migration log grows, and the
# content types of the moved models are relabelled (checked on their own).
CHANGED_BY_DESIGN = {"django_migrations", "django_content_type"}


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory) -> Upgrade:
    db = scratch_database(tmp_path_factory.mktemp("upgrade"))
    try:
        for app, migration in TODAYS_SCHEMA:
            manage(db, "migrate", app, *([migration] if migration else []), "--no-input")
        tables = db.tables()
        assert not [t for t in tables if t.startswith("accounts_")], "accounts must not be applied yet"
        prefixes = tuple(f"{label}_" for label in our_app_labels())
        ours = [table for table in tables if table.startswith(prefixes)]
        ids = populate(db)
        counts_before = db.counts()
        # Each table's columns at the old schema: a later migration may add
        # columns (new features); the old columns' values must be unchanged.
        columns = {table: db.columns(table) for table in tables}
        rows_before = {table: db.rows(table, columns[table]) for table in tables if table not in CHANGED_BY_DESIGN}
        content_types_before = db.rows("django_content_type", columns["django_content_type"])

        upgraded = manage(db, "migrate", "--no-input")

        yield Upgrade(
            db=db, ids=ids, ours_before=ours, empty_before=[t for t in ours if counts_before[t] == 0],
            counts_before=counts_before, counts_after=db.counts(), rows_before=rows_before,
            rows_after={table: db.rows(table, columns[table]) for table in rows_before},
            content_types_before=content_types_before, upgrade_output=upgraded.stdout,
        )
    finally:
        db.drop()


def test_every_table_of_ours_had_rows_before_the_upgrade(upgrade):
    assert set(MOVED_TABLES) <= set(upgrade.ours_before)
    assert len(upgrade.ours_before) >= 16, upgrade.ours_before
    assert upgrade.empty_before == [], (
        f"no row was put in {upgrade.empty_before} at today's schema: add one to populate() "
        "so the upgrade is proven not to lose it")


# Migrations written after the move may add tables (and their content types and
# permissions); the move itself adds none and drops none.
GROWS_WITH_NEW_MODELS = {"django_migrations", "django_content_type", "auth_permission"}


def test_the_upgrade_applies_the_accounts_migrations_and_drops_no_table(upgrade):
    for name in ("accounts.0001_initial", "budgets.0006_accounts_foreign_keys",
                 "gateway.0004_accounts_models_moved"):
        assert f"Applying {name}... OK" in upgrade.upgrade_output
    assert set(upgrade.counts_before) <= set(upgrade.counts_after)
    new_tables = set(upgrade.counts_after) - set(upgrade.counts_before)
    assert not [t for t in new_tables if t.startswith("accounts_")], "the moved models keep their tables"
    assert all(upgrade.counts_after[t] == 0 for t in new_tables), "a new table starts empty"


def test_every_row_count_is_unchanged_after_the_upgrade(upgrade):
    before = {t: n for t, n in upgrade.counts_before.items() if t not in GROWS_WITH_NEW_MODELS}
    after = {t: upgrade.counts_after[t] for t in before}
    assert after == before
    assert upgrade.counts_after["django_migrations"] >= upgrade.counts_before["django_migrations"] + 3


def test_every_row_of_every_table_is_still_there_unchanged_after_the_upgrade(upgrade):
    def kept(table: str) -> bool:
        after = upgrade.rows_after[table]
        if table in GROWS_WITH_NEW_MODELS:  # new models' permissions may join; the old rows stay as they were
            return set(upgrade.rows_before[table]) <= set(after)
        return after == upgrade.rows_before[table]

    changed = [t for t in upgrade.rows_before if not kept(t)]
    assert changed == [], {t: (upgrade.rows_before[t], upgrade.rows_after[t]) for t in changed}
    assert all(upgrade.rows_after[t] for t in upgrade.ours_before)


def test_the_key_hash_team_name_budget_limit_and_usage_team_survive_in_their_columns(upgrade):
    db, ids = upgrade.db, upgrade.ids
    assert db.query("SELECT key_hash, team_id, max_output_tokens FROM gateway_apikey WHERE id = %s",
                    (ids["key"],)) == [(KEY_HASH, ids["team"], 2048)]
    assert db.query("SELECT name FROM gateway_team WHERE id = %s", (ids["team"],)) == [(TEAM_NAME,)]
    [(limit, team_id)] = db.query("SELECT limit_usd, team_id FROM budgets_budget WHERE id = %s",
                                  (ids["budget"],))
    assert (str(limit), team_id) == (LIMIT_USD, ids["team"])
    assert db.query("SELECT team_id, api_key_id FROM budgets_usage WHERE id = %s",
                    (ids["usage"],)) == [(ids["team"], ids["key"])]
    assert db.query("SELECT team_id, user_id, role FROM gateway_membership WHERE id = %s",
                    (ids["membership"],)) == [(ids["team"], ids["user"], "lead")]


def test_the_moved_models_content_types_now_say_accounts_and_permissions_still_point_at_them(upgrade):
    db, ids = upgrade.db, upgrade.ids
    for model, ct in ids["content_types"].items():
        assert db.query("SELECT app_label, model FROM django_content_type WHERE id = %s", (ct,)) == [
            ("accounts", model)]
        assert db.query("SELECT id FROM django_content_type WHERE model = %s AND app_label IN ('gateway', "
                        "'accounts')", (model,)) == [(ct,)], "one content type per moved model, the old one"
        for action in ("add", "change", "delete", "view"):
            permission = ids["permissions"][f"{action}_{model}"]
            assert db.query("SELECT content_type_id, codename FROM auth_permission WHERE id = %s",
                            (permission,)) == [(ct, f"{action}_{model}")]
    moved_models = tuple(ids["content_types"])
    assert db.query("SELECT COUNT(*) FROM django_content_type WHERE app_label = 'gateway' AND model IN "
                    f"({', '.join(['%s'] * len(moved_models))})", moved_models) == [(0,)]
    # Every other content type kept its id and label (models added later only add rows).
    moved = set(ids["content_types"].values())
    others = [row for row in upgrade.content_types_before if row[0] not in moved]
    after = {row[0]: row for row in db.rows("django_content_type", db.columns("django_content_type"))}
    assert [after.get(row[0]) for row in others] == others


def test_the_new_code_finds_the_old_rows_through_the_accounts_models(upgrade):
    ids = upgrade.ids
    found = orm(upgrade.db, f"""
import json
from accounts.models import ApiKey, AuditEntry, Membership, Team
from budgets.models import Budget, RateLimit, Usage
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
key = ApiKey.objects.select_related("team").get(key_hash={KEY_HASH!r})
team = key.team
budget = Budget.objects.select_related("team").get(pk={ids["budget"]})
key_budget = Budget.objects.select_related("api_key__team", "persona").get(pk={ids["key_budget"]})
usage = Usage.objects.select_related("team", "api_key").get(request_id="req-1")
ada = User.objects.get(username="ada")
audit = AuditEntry.objects.select_related("actor").get(pk={ids["audit"]})
log = LogEntry.objects.get(user=ada)
print(json.dumps({{
    "key": [key.pk, key.name, key.scopes, key.max_output_tokens, key.is_active()],
    "team": [team.pk, team.name, sorted(k.name for k in team.api_keys.all())],
    "memberships": [[m.user.username, m.team.name, m.role] for m in Membership.objects.all()],
    "budget": [str(budget.limit_usd), budget.team.name, budget.team_id],
    "key_budget": [key_budget.api_key.key_hash, key_budget.api_key.team.name, key_budget.persona.slug],
    "team_budgets": sorted(b.name for b in team.budgets.all()),
    "rate_limits": sorted(([r.team_id, r.api_key_id] for r in RateLimit.objects.all()), key=str),
    "usage": [usage.team.name, usage.api_key.key_hash, str(usage.cost_usd), usage.attempt_log[0]["outcome"]],
    "audit": [audit.actor.username, audit.after],
    "content_types": {{m._meta.model_name: [ContentType.objects.get_for_model(m).pk,
                                            ContentType.objects.get_for_model(m).app_label]
                      for m in (Team, ApiKey, Membership, AuditEntry)}},
    "permissions": sorted(f"{{p.content_type.app_label}}.{{p.codename}}" for p in ada.user_permissions.all()),
    "has_perm": [ada.has_perm("accounts.change_team"), ada.has_perm("accounts.view_apikey"),
                 ada.has_perm("accounts.view_membership"), ada.has_perm("gateway.change_team")],
    "log_entry": [log.content_type.model_class().__name__, log.get_edited_object().name],
    "accounts_permissions": Permission.objects.filter(content_type__app_label="accounts").count(),
}}))
""")
    assert found["key"] == [ids["key"], "ci agents", ["chat", "direct"], 2048, True]
    assert found["team"] == [ids["team"], TEAM_NAME, ["ci agents"]]
    assert found["memberships"] == [["ada", TEAM_NAME, "lead"]]
    assert found["budget"] == [LIMIT_USD, TEAM_NAME, ids["team"]]
    assert found["key_budget"] == [KEY_HASH, TEAM_NAME, "architect"]
    assert found["team_budgets"] == ["platform monthly"]
    assert found["rate_limits"] == sorted([[None, ids["key"]], [ids["team"], None]], key=str)
    assert found["usage"] == [TEAM_NAME, KEY_HASH, "0.00038700", "ok"]
    assert found["audit"] == ["ada", {"limit_usd": LIMIT_USD}]
    assert found["content_types"] == {model: [ct, "accounts"] for model, ct in ids["content_types"].items()}
    assert found["permissions"] == ["accounts.change_team", "accounts.view_apikey"]
    assert found["has_perm"] == [True, True, True, False]
    assert found["log_entry"] == ["Team", TEAM_NAME]
    assert found["accounts_permissions"] == 16


def test_after_the_upgrade_nothing_is_unapplied_and_the_models_match_the_migrations(upgrade):
    manage(upgrade.db, "migrate", "--check")
    plan = manage(upgrade.db, "showmigrations", "--plan").stdout
    assert "[ ]" not in plan and "[X]  accounts.0001_initial" in plan
    manage(upgrade.db, "makemigrations", "--check", "--dry-run")


def test_new_teams_and_keys_can_be_created_in_the_upgraded_database(upgrade):
    # Rows came in without explicit ids, so on PostgreSQL the sequences moved with them.
    made = orm(upgrade.db, """
import json
from accounts.models import ApiKey, Team
team = Team.objects.create(name="made after the upgrade")
key, raw = ApiKey.issue(team=team, name="fresh")
print(json.dumps({"team": team.pk, "key_team": ApiKey.objects.get(pk=key.pk).team.name}))
""")
    assert made["team"] > upgrade.ids["other_team"]
    assert made["key_team"] == "made after the upgrade"


@pytest.fixture
def fresh_database(tmp_path):
    db = scratch_database(tmp_path)
    try:
        yield db
    finally:
        db.drop()


def test_a_fresh_database_migrates_from_zero_and_keeps_the_gateway_table_names(fresh_database):
    db = fresh_database
    manage(db, "migrate", "--no-input")
    tables = db.tables()
    assert set(MOVED_TABLES) <= set(tables)
    assert not [t for t in tables if t.startswith("accounts_")]
    manage(db, "migrate", "--check")
    made = orm(db, """
import json
from accounts.models import ApiKey, Team
from django.contrib.contenttypes.models import ContentType
team = Team.objects.create(name="fresh")
key, raw = ApiKey.issue(team=team, name="first")
print(json.dumps({
    "table": Team._meta.db_table,
    "key_team": ApiKey.objects.select_related("team").get(pk=key.pk).team.name,
    "team_ct": ContentType.objects.get_for_model(Team).app_label,
    "gateway_cts": ContentType.objects.filter(app_label="gateway", model__in=["team", "apikey", "membership",
                                                                              "auditentry"]).count(),
}))
""")
    assert made == {"table": "gateway_team", "key_team": "fresh", "team_ct": "accounts", "gateway_cts": 0}
    assert db.query("SELECT name FROM gateway_team") == [("fresh",)]
