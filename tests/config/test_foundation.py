"""The foundation's promises: stdlib `platform`, settings, commands, secrets at rest."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db import connection

from accounts.models import ApiKey, Team, hash_key
from personas.models import Persona
from providers.models import Provider

ROOT = Path(__file__).resolve().parents[2]
SEED_MAP = {
    "architect": {"provider": "openai", "model": "gpt-4"},
    "developer": {"provider": "gemini", "model": "gemini-pro"},
    "reviewer": {"provider": "claude_agent"},
}


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )


def test_import_platform_is_the_standard_library_module():
    import platform

    assert hasattr(platform, "python_version")
    assert "site-packages" not in (platform.__file__ or "") and not (ROOT / "platform" / "__init__.py").exists()
    assert platform.__file__.startswith(sys.base_prefix) or "lib/python" in platform.__file__


def test_the_server_refuses_to_start_without_a_real_secret_when_debug_is_off():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k != "SECRET_KEY"}, "DEBUG": "0",
             "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert result.returncode != 0
    assert "SECRET_KEY is missing" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DEBUG": "0", "SECRET_KEY": "a-real-secret-for-this-test",
             "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert ok.returncode == 0, ok.stderr


def test_bootstrap_creates_demo_world_once_and_is_idempotent(db):
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    first = out.getvalue()
    assert "Dashboard login (shown once)" in first and "API key for team 'demo'" in first
    assert set(Persona.objects.values_list("slug", flat=True)) == {"architect", "developer", "reviewer"}
    raw_key = first.split("export EP_API_KEY=")[-1].strip()
    assert ApiKey.objects.get(key_hash=hash_key(raw_key)).team.name == "demo"
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "shown once" not in out.getvalue()
    assert Provider.objects.count() == 1 and ApiKey.objects.count() == 1


def test_bootstrap_creates_and_updates_providers_from_the_env(db, monkeypatch):
    monkeypatch.setenv("EP_OPENAI_API_KEY", "sk-test-first-value")
    monkeypatch.setenv("EP_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("EP_CLAUDE_AGENT_ENABLED", "1")
    monkeypatch.setenv("EP_CLAUDE_AGENT_CLI_PATH", "/opt/claude")
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "Provider 'openai' created" in out.getvalue()
    openai_provider = Provider.objects.get(name="openai")
    assert openai_provider.kind == "openai" and openai_provider.get_credential() == "sk-test-first-value"
    assert Provider.objects.get(name="claude_agent").options == {"cli_path": "/opt/claude"}
    monkeypatch.setenv("EP_OPENAI_API_KEY", "sk-test-second-value")
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "Provider 'openai' updated" in out.getvalue()
    assert Provider.objects.get(name="openai").get_credential() == "sk-test-second-value"


def test_provider_credentials_are_encrypted_at_rest(db):
    provider = Provider(name="openai", kind="openai")
    provider.set_credential("sk-test-plaintext-should-not-be-stored")
    provider.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT credential_encrypted FROM providers_provider WHERE name = 'openai'")
        stored = cursor.fetchone()[0]
    assert "sk-test-plaintext" not in stored
    assert Provider.objects.get(name="openai").get_credential() == "sk-test-plaintext-should-not-be-stored"


def test_credentials_survive_key_rotation(db, settings):
    from cryptography.fernet import Fernet

    from providers.crypto import derive_key

    provider = Provider(name="openai", kind="openai")
    provider.set_credential("sk-test-rotate-me")
    provider.save()
    new_key = Fernet.generate_key().decode()
    settings.EP_ENCRYPTION_KEYS = [new_key, derive_key(settings.SECRET_KEY)]
    call_command("rotate_credentials", stdout=io.StringIO())
    settings.EP_ENCRYPTION_KEYS = [new_key]  # the old key is gone now
    assert Provider.objects.get(name="openai").get_credential() == "sk-test-rotate-me"


def test_api_keys_are_stored_hashed(db):
    team = Team.objects.create(name="red")
    key, raw = ApiKey.issue(team=team, name="k")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_apikey")
        row = " ".join(str(v) for v in cursor.fetchone())
    assert raw not in row and raw[:10] in row  # only the prefix is readable
    assert key.key_hash == hash_key(raw)


def test_create_api_key_prints_the_key_alone_on_stdout(transactional_db):
    result = run("create_api_key", "--team", "green", "--name", "ci", "--scope", "admin",
                 DATABASE_URL=_database_url())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ep-")
    key = ApiKey.objects.get(key_hash=hash_key(lines[0]))
    assert key.team.name == "green" and key.scopes == ["admin"]


def test_create_api_key_refuses_unknown_scopes(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown scope"):
        call_command("create_api_key", team="t", name="n", scopes=["root"])


def test_the_seed_persona_map_imports_as_written(db, tmp_path):
    from providers.services import demo_provider_ensure

    demo_provider_ensure()
    path = tmp_path / "persona_provider_map.json"
    path.write_text(json.dumps(SEED_MAP))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_persona_map", str(path), stdout=out, stderr=err)
    assert "Imported 3 persona(s)" in out.getvalue()
    assert "Provider 'openai' was not configured: created disabled" in err.getvalue()
    reviewer = Persona.objects.get(slug="reviewer").steps.get()
    assert (reviewer.provider.kind, reviewer.model) == ("claude_agent", "claude-sonnet-4-6")
    assert Persona.objects.get(slug="architect").steps.get().model == "gpt-4"


def test_the_persona_map_round_trips_with_fallbacks(db, tmp_path):
    from providers.services import demo_provider_ensure

    demo_provider_ensure()
    data = {"architect": {"provider": "openai", "model": "gpt-4o",
                          "fallback": [{"provider": "demo", "model": "demo"}]}}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    call_command("import_persona_map", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command("export_persona_map", stdout=out)
    assert json.loads(out.getvalue()) == data


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ('{"a": {"model": "x"}}', "needs at least a \"provider\""),
    ('{"a": {"provider": "nowhere"}}', "Unknown provider 'nowhere'"),
    ('{"a": {"provider": "demo", "fallback": "demo"}}', "must be a list"),
])
def test_a_bad_persona_map_is_refused_with_a_clear_message(db, tmp_path, content, message):
    from django.core.management.base import CommandError

    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("import_persona_map", str(path), stdout=io.StringIO(), stderr=io.StringIO())


def _database_url() -> str:
    from tests.conftest import _database_url_for

    return _database_url_for(connection.settings_dict)


def test_the_readme_run_command_serves_health_within_a_minute(tmp_path):
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'quickstart.sqlite3'}"}
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        ["make", "serve", f"PYTHON={sys.executable}", f"PORT={port}"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make and the daphne it started
        output = process.communicate(timeout=20)[0]
    assert "Dashboard login (shown once)" in output
    assert "\nexport EP_API_KEY=ep-" in output


def _free_port() -> int:
    from tests.conftest import _free_port as free

    return free()
