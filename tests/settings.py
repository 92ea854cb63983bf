"""Settings for the test run: production settings, with a test-only secret.

EP_TEST_DB_NAME names the test database (PostgreSQL) or file (SQLite), so
several test runs on one machine do not share one.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-never-used-in-production-3f9a")
# The ledger's spool (budgets/spool.py): a fresh directory for each test run,
# shared with the live servers it starts (they inherit this environment).
# The process that makes it removes it at exit; the servers it starts find it set and leave it.
if "EP_SPOOL_DIR" not in os.environ:
    os.environ["EP_SPOOL_DIR"] = tempfile.mkdtemp(prefix=f"ep-spool-{os.environ.get('EP_TEST_DB_NAME', '')}-")
    atexit.register(shutil.rmtree, os.environ["EP_SPOOL_DIR"], ignore_errors=True)
# Tests write ledger rows into past days by hand: a sweeper rolling those days up
# behind their backs would race them. Rollup tests roll up through the commands.
os.environ.setdefault("EP_ROLLUP_SECONDS", "0")
# The fake providers listen on 127.0.0.1 (providers/validation.py).
os.environ.setdefault("EP_ALLOW_PRIVATE_PROVIDER_URLS", "1")

from config.settings import *  # noqa: E402,F401,F403
from config.settings import BASE_DIR, DATABASES  # noqa: E402

_name = os.environ.get("EP_TEST_DB_NAME", "")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db{'-' + _name if _name else ''}.sqlite3")}
elif _name:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{_name}"}
