"""Every command the README shows, run as it is written, in a copy of the
checkout as a newcomer has it: no SECRET_KEY, DEBUG, DATABASE_URL or EP_*
in the environment, the checkout's own SQLite database, the project's .venv.

Only the port differs from the README's (8000 may be taken on a test machine):
`make run PORT=...`, as the README says, and the same port in the URLs.
`make test` is the one command not run here: it is this test suite. The
virtualenv is the project's own (linked, not rebuilt): installing a fresh one
needs the package index, and tests reach nothing but 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, _free_port

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text()
SERVE_SECONDS = 120  # make checks the install, bootstrap migrates a new database, daphne starts


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def lines(block: str) -> list[str]:
    """The block's commands, a backslash-continued command as one."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def newcomer_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                           "VIRTUAL_ENV", "PYTHONPATH") and not name.startswith("EP_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The checkout's files as a clone has them (tracked and new, nothing
    ignored: no database, no test artifacts), modification times kept so make
    sees the install as done; .venv linked to the project's."""
    # The copy links the project's .venv: an install it found out of date would
    # reinstall into that .venv from the copy (the client's editable install
    # then points at a directory deleted after the test). Bring it up to date here.
    subprocess.run(["make", "install-dev"], cwd=ROOT, check=True, capture_output=True)
    target = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def run(command: str, checkout: Path, port: int, **env: str) -> subprocess.CompletedProcess:
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-e", "-c", command], cwd=checkout, env={**newcomer_env(), **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def logs_in(url: str, username: str, password: str) -> bool:
    with httpx.Client(base_url=url, timeout=10) as browser:
        browser.get("/login/")
        answer = browser.post("/login/", data={"username": username, "password": password,
                                               "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
    return answer.status_code == 302 and answer.headers["location"] == "/dashboard/"


@pytest.fixture(scope="module")
def served(checkout):
    """`make run` (the README's first command), until its /health answers."""
    port = _free_port()
    make_run = next(line for line in lines(blocks("bash")[0]) if line.startswith("make run"))
    log = (checkout / "make-run.log").open("w")
    process = subprocess.Popen(["bash", "-c", make_run.replace("make run", f"make run PORT={port}", 1)],
                               cwd=checkout, env=newcomer_env(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, (checkout / "make-run.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("make run did not serve /health:\n" + (checkout / "make-run.log").read_text())
        yield url, port, (checkout / "make-run.log").read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make and the server it started
        process.wait(timeout=20)
        log.close()


def test_every_readme_command_runs_as_written(checkout, served):
    url, port, first_run = served
    assert [line.split("#")[0].split() for line in lines(blocks("bash")[0])] == [["make", "run"], ["make", "test"]]

    # The first run's login and the line to paste.
    password = re.search(r"user 'admin', password '([^']+)'", first_run).group(1)
    export = re.search(r"^export EP_API_KEY=ep-\S+$", first_run, flags=re.MULTILINE).group(0)
    assert logs_in(url, "admin", password)

    # The quick start: curl, then the OpenAI SDK, in a shell where the line was pasted.
    quick = run(export + "\n" + blocks("bash")[1], checkout, port)
    assert '"status": "ok"' in quick.stdout or '"status":"ok"' in quick.stdout
    assert '"content": "[demo]' in quick.stdout or '"content":"[demo]' in quick.stdout
    key = export.split("=", 1)[1]
    run(".venv/bin/python - <<'EOF'\n" + blocks("python")[0] + "EOF", checkout, port, EP_API_KEY=key)

    # Day two: a new admin password, a new key that works.
    reset, new_key = lines(blocks("bash")[2])
    new_password = run(reset, checkout, port).stdout.strip()
    assert new_password != password and logs_in(url, "admin", new_password) and not logs_in(url, "admin", password)
    models = run(new_key + f'\ncurl -sf -H "Authorization: Bearer $EP_API_KEY" {url}/v1/models', checkout, port)
    assert '"architect"' in models.stdout

    # The management commands, one by one, on the same database.
    outputs = {line.split()[2]: run(line, checkout, port) for line in lines(blocks("bash")[3])}
    assert set(outputs) == {"bootstrap", "create_api_key", "import_persona_map", "export_persona_map",
                            "rotate_credentials", "reset_admin_password", "catalog_refresh", "tools_refresh",
                            "ledger_rollup", "ledger_prune"}
    assert re.search(r"^Rolled up \d+ day\(s\)", outputs["ledger_rollup"].stdout, re.MULTILINE)
    assert "raw row(s) of 0 day(s) older than 400 days; their totals stay in the rollups." in \
        outputs["ledger_prune"].stdout  # a fresh checkout's ledger is younger than that
    assert "demo: 0 added, 0 completed, from provider" in outputs["catalog_refresh"].stdout
    assert re.search(r"^builtin: \d+ tools listed; nothing changed$", outputs["tools_refresh"].stdout, re.MULTILINE)
    again = outputs["bootstrap"].stdout
    assert "password '" not in again and "export EP_API_KEY=ep-" not in again  # secrets are shown once
    assert ".venv/bin/python manage.py reset_admin_password" in again and "create_api_key --team demo" in again
    assert re.fullmatch(r"ep-\S+\n", outputs["create_api_key"].stdout)  # the key alone, for scripts
    assert '"architect"' in (checkout / "persona_map.json").read_text()
    assert logs_in(url, "admin", outputs["reset_admin_password"].stdout.strip())


@pytest.mark.parametrize("command, env", [
    (".venv/bin/python manage.py check", {"DATABASE_URL": "sqlite:///elsewhere.sqlite3"}),  # not the checkout's
    (f".venv/bin/python manage.py runserver 127.0.0.1:{_free_port()} --noreload", {}),  # a server
])
def test_the_development_secret_is_for_checkout_commands_only(checkout, command, env):
    refused = subprocess.run(["bash", "-c", command], cwd=checkout, env={**newcomer_env(), **env},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "SECRET_KEY is missing or is the development default" in refused.stderr
