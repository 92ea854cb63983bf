"""What the batch tests share: the openai SDK client, input files, and the
batch worker (`manage.py run_batches`) as a real process against the test database."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid

import openai

from tests.conftest import ARTIFACTS, ROOT, server_env


def client(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def chat_line(custom_id: str, prompt: str, model: str = "architect", url: str = "/v1/chat/completions",
              **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}], **body}}


def jsonl(lines: list) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def upload(sdk: openai.OpenAI, lines: list, name: str = "requests.jsonl"):
    return sdk.files.create(file=(name, io.BytesIO(jsonl(lines)), "application/jsonl"), purpose="batch")


def start_worker(database_url: str, *args: str) -> subprocess.Popen:
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"batch-worker-{uuid.uuid4().hex[:8]}.log"
    process = subprocess.Popen([sys.executable, "manage.py", "run_batches", "--poll", "0.1", *args], cwd=ROOT,
                               env=server_env(database_url), stdout=log.open("w"), stderr=subprocess.STDOUT)
    process.log_path = log  # what it logged, for tests that read it
    return process


def run_worker_until_idle(database_url: str, *args: str, timeout: float = 120) -> str:
    """One worker run to the end of the work there is; its output."""
    result = subprocess.run([sys.executable, "manage.py", "run_batches", "--poll", "0.1", "--until-idle", *args],
                            cwd=ROOT, env=server_env(database_url), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def wait_for_batch(sdk: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 60):
    """Poll as an SDK user would, until the batch reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.2)


def results(sdk: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]
