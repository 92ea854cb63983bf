"""The deployment files in platform/, parsed by real tools since no container
runs here: the Dockerfile by Docker's own parser, the compose file against the
compose-spec schema, the proxy config by `haproxy -c`, the systemd units by
`systemd-analyze verify`, and what they point at checked to exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
import yaml

from tests.conftest import ROOT

PLATFORM = ROOT / "platform"
VENV_BIN = Path(sys.executable).parent
GRACE_SECONDS = 30  # EP_SHUTDOWN_GRACE_SECONDS in env.example and the compose file
SERVE_MARGIN_SECONDS = 10  # config/serve.py EXIT_MARGIN_SECONDS


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"a duration in seconds, not {duration!r}"
    return int(match.group(1))


# -- the image ----------------------------------------------------------------------------------


def test_the_image_runs_the_production_server_as_a_non_root_user_on_a_pinned_base():
    commands = dockerfile.parse_file(str(PLATFORM / "Dockerfile"))
    by_name = {}
    for command in commands:
        by_name.setdefault(command.cmd, []).append(command)

    [base] = by_name["FROM"]
    image, _, tag = base.value[0].partition(":")
    assert image == "python" and re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), base.value
    assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")  # the Python the tests run

    users = by_name["USER"]
    assert users[-1].value[0].split(":")[0] not in ("root", "0")
    assert commands.index(users[-1]) > max(commands.index(c) for c in by_name["RUN"])  # nothing runs as root after
    assert "useradd" in " ".join(c.value[0] for c in by_name["RUN"])

    [cmd] = by_name["CMD"]
    assert cmd.json and list(cmd.value[:3]) == ["python", "-m", "config.serve"]
    assert by_name["STOPSIGNAL"][0].value == ("SIGTERM",)  # the drain's signal (config/draining.py)
    assert "/health" in by_name["HEALTHCHECK"][0].original
    for copy in by_name["COPY"]:
        *sources, _ = copy.value
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = {line.strip() for line in (PLATFORM / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "*.sqlite3*", "test-artifacts", "var", ".env", "platform/*.env"} <= ignored


# -- compose ------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((PLATFORM / "compose.yaml").read_text())


def test_the_compose_file_follows_the_compose_spec():
    check = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                            str(PLATFORM / "compose.yaml")], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_compose_file_runs_two_gateways_behind_the_proxy_with_their_services():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "gateway1", "gateway2", "proxy", "prometheus",
                             "grafana"}
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert service["build"]["dockerfile"] == "platform/Dockerfile" and service["build"]["context"] == ".."
            continue
        assert re.search(r":v?\d+\.\d+", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
    for name in ("gateway1", "gateway2"):
        gateway = services[name]
        assert seconds(gateway["stop_grace_period"]) >= GRACE_SECONDS + SERVE_MARGIN_SECONDS
        assert gateway["environment"]["EP_SHUTDOWN_GRACE_SECONDS"] == str(GRACE_SECONDS)
        assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert "redis:6379" in gateway["environment"]["REDIS_URL"]
        assert "@postgres:5432/" in gateway["environment"]["DATABASE_URL"]
        assert "localhost" in gateway["environment"]["ALLOWED_HOSTS"].split(",")  # the health checks' Host
    spools = {services[name]["volumes"][0].split(":")[0] for name in ("gateway1", "gateway2")}
    assert len(spools) == 2  # each gateway's ledger spool is its own, and kept
    proxy = services["proxy"]["environment"]
    assert (proxy["EP_GATEWAY_1"], proxy["EP_GATEWAY_2"]) == ("gateway1:8000", "gateway2:8000")
    assert proxy["EP_PROXY_HEALTH_HOST"] == "localhost"


def test_every_file_the_compose_file_mounts_is_in_the_repository():
    made_at_deploy = {"./secrets/ep-admin-key"}  # RUNBOOK.md, "Deploy with compose"
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(".") and source not in made_at_deploy:
                assert (PLATFORM / source).exists(), f"{name} mounts {source}: missing"
    prometheus = yaml.safe_load((PLATFORM / "compose" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["gateway1:8000", "gateway2:8000"]  # each host, not the proxy
    for provisioning in (PLATFORM / "compose" / "grafana").rglob("*.yml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1


# -- the proxy ----------------------------------------------------------------------------------


def test_the_proxy_config_is_valid_for_haproxy(tmp_path):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.fail("HAProxy is missing: run scripts/install-proxy.sh (make test does)")
    env = {**os.environ, "EP_PROXY_BIND": "127.0.0.1:18080", "EP_GATEWAY_1": "127.0.0.1:8001",
           "EP_GATEWAY_2": "127.0.0.1:8002", "EP_PROXY_ADMIN_SOCKET": str(tmp_path / "admin.sock")}
    check = subprocess.run([haproxy, "-c", "-f", str(PLATFORM / "haproxy.cfg")], env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "Configuration file is valid" in check.stdout, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr


# -- systemd ------------------------------------------------------------------------------------


def test_the_systemd_units_verify(tmp_path):
    """`systemd-analyze verify` also checks that each command exists: the units
    are verified as installed under a stand-in for /opt/execution-platform
    whose .venv is this one."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian's systemd package has it)")
    install = tmp_path / "opt"
    (install / ".venv" / "bin").mkdir(parents=True)
    (install / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (install / "platform").symlink_to(PLATFORM)
    units = tmp_path / "units"
    units.mkdir()
    names = []
    for unit in sorted((PLATFORM / "systemd").iterdir()):
        (units / unit.name).write_text(unit.read_text().replace("/opt/execution-platform", str(install)))
        names.append(unit.name)
    assert "execution-platform@.service" in names
    (units / "execution-platform@8001.service").symlink_to(units / "execution-platform@.service")
    names = [name for name in names if name != "execution-platform@.service"] + ["execution-platform@8001.service"]
    check = subprocess.run([analyze, "verify", "--man=no", *names], cwd=units, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0 and not check.stderr.strip(), check.stdout + check.stderr

    gateway = (PLATFORM / "systemd" / "execution-platform@.service").read_text()
    assert "ExecStart=/opt/execution-platform/.venv/bin/python -m config.serve" in gateway
    assert "KillMode=mixed" in gateway  # SIGTERM to the supervisor, which drains its workers
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", gateway, re.M).group(1))
    assert stop >= GRACE_SECONDS + SERVE_MARGIN_SECONDS


def test_the_runbook_names_only_files_that_exist():
    runbook = (PLATFORM / "RUNBOOK.md").read_text()
    for heading in ("## Deploy on hosts", "## Deploy with compose", "## Upgrade", "## Rotate keys", "## Back up",
                    "## Restore"):
        assert heading in runbook
    named = set(re.findall(r"`((?:platform/|scripts/|systemd/|compose/)[\w./@{},-]+)`", runbook))
    assert named
    for path in named:
        if "{" in path:
            stem, _, rest = path.partition("{")
            options, _, tail = rest.partition("}")
            paths = [stem + option + tail for option in options.split(",")]
        else:
            paths = [path]
        for each in paths:
            assert (ROOT / each).exists() or (PLATFORM / each).exists(), f"RUNBOOK.md names {each}: missing"
