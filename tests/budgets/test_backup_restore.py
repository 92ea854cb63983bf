"""The runbook's backup and restore (platform/scripts/backup.sh, restore.sh),
run as an operator would: a ledger written by a live gateway is dumped,
restored into a new database, and `ledger_verify` finds no drift there; a
drift in the restored copy is caught."""

from __future__ import annotations

import subprocess
import sys
import uuid
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from budgets.models import Budget, BudgetCounter, Usage
from providers.models import Model
from tests.conftest import ARTIFACTS, ROOT, server_env

pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "platform" / "scripts"


def on_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def script(name: str, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = server_env(database_url, PYTHON=sys.executable)
    return subprocess.run([str(SCRIPTS / name), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def new_database(test_database_url):
    """A database of this test's own on the same server, dropped afterwards."""
    if not test_database_url.startswith("postgres"):
        pytest.skip("pg_dump and pg_restore back up PostgreSQL (an SQLite deployment copies its file)")
    name = f"ep_restore_{uuid.uuid4().hex[:12]}"
    admin = on_database(test_database_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield on_database(test_database_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_restored_backup_has_the_whole_ledger_and_no_drift(live, world, test_database_url, new_database):
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=0, output_price=1)
    budget = Budget.objects.create(name="red backup", scope="team", team=world.red, limit_usd=Decimal("0.00005"),
                                   thresholds=[])
    statuses = [httpx.post(live.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {world.red_key}"},
                           json={"model": "architect", "max_tokens": 10,
                                 "messages": [{"role": "user", "content": "hi"}]}).status_code
                for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2  # $0.00001 each: the budget held five (budget_exceeded)
    counter = BudgetCounter.objects.get(budget=budget)
    assert counter.spent == Decimal("0.00005")

    ARTIFACTS.mkdir(exist_ok=True)
    dump = ARTIFACTS / f"backup-{uuid.uuid4().hex[:8]}.dump"
    try:
        backup = script("backup.sh", test_database_url, str(dump))
        assert backup.returncode == 0, backup.stderr
        restore = script("restore.sh", new_database, str(dump))
    finally:
        dump.unlink(missing_ok=True)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "against the ledger: no drift." in restore.stdout, restore.stdout

    with psycopg.connect(new_database) as restored:
        rows = restored.execute("SELECT count(*), sum(cost_usd) FROM budgets_usage WHERE team_id = %s",
                                (world.red.id,)).fetchone()
        assert rows == (Usage.objects.filter(team=world.red).count(), Decimal("0.00005"))
        assert rows[0] == 7  # refused requests keep their rows too
        # A counter that no longer matches the restored ledger is caught there.
        restored.execute("UPDATE budgets_budgetcounter SET spent = spent + 1 WHERE id = %s", (counter.id,))
    check = subprocess.run([sys.executable, "manage.py", "ledger_verify"], cwd=ROOT, env=server_env(new_database), capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 1
    assert f"DRIFT budget {budget.id} 'red backup'" in check.stdout
    assert "spent 1.00005000 but the ledger sums 0.00005000 (+1.00000000)" in check.stdout

