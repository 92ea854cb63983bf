"""/v1/files for batches through the openai SDK: upload, list, retrieve,
content, delete; every bad line refused at upload with the envelope naming it;
batches.create's own refusals; and one team never sees another's files or batches."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest

from budgets.models import Usage
from gateway.models import BatchFile
from tests.api.batch_support import chat_line, client, jsonl, upload
from tests.conftest import start_daphne, stop_process

GOOD = chat_line("first", "Hello")


def test_an_uploaded_file_is_listed_retrieved_downloaded_and_deleted(live, world):
    sdk = client(live, world.red_key)
    lines = [GOOD, chat_line("second", "Again")]
    uploaded = upload(sdk, lines, name="night run.jsonl")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(jsonl(lines))
    assert (uploaded.filename, uploaded.status) == ("night run.jsonl", "processed")
    assert [f.id for f in sdk.files.list(purpose="batch")] == [uploaded.id]
    assert sdk.files.list(purpose="batch_output").data == []
    assert sdk.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert sdk.files.content(uploaded.id).content == jsonl(lines)
    deleted = sdk.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.files.retrieve(uploaded.id)
    assert missing.value.body["code"] == "file_not_found"
    assert Usage.objects.filter(endpoint__startswith="files.").count() == 7  # one row per request


BAD_LINES = [
    ("{not json", "not valid JSON"),
    (json.dumps(["a", "list"]), "must be a JSON object"),
    (json.dumps({**GOOD, "custom_id": ""}), "custom_id must be a string of 1 to 100 characters"),
    (json.dumps({**GOOD, "custom_id": "x" * 101}), "custom_id must be a string of 1 to 100 characters"),
    (json.dumps({**GOOD, "custom_id": "first"}), "custom_id 'first' is used by an earlier line"),
    (json.dumps({**GOOD, "custom_id": "b", "method": "GET"}), 'method must be "POST"'),
    (json.dumps({**GOOD, "custom_id": "b", "url": "/v1/images/generations"}), "is not an endpoint batches can call"),
    (json.dumps({**GOOD, "custom_id": "b", "body": "text"}), "body must be a JSON object"),
    (json.dumps(chat_line("b", "Hi") | {"body": {"model": "architect"}}), "body.messages: Field required"),
    (json.dumps(chat_line("b", "Hi", stream=True)), "stream: true is not supported in a batch"),
    (json.dumps(chat_line("b", "Hi", n=2)), "n=2"),
    (json.dumps(chat_line("b", "Hi", temperature=5)), "body.temperature"),
    (json.dumps(chat_line("b", "Hi", response_format={"x": float("nan")})), "NaN is not a JSON number"),
    ("[" * 100_000, "not valid JSON"),
    (json.dumps(chat_line("b", "Hi\u0000there")), "NUL character"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES)
def test_a_bad_line_is_refused_at_upload_naming_it(live, world, line, problem):
    sdk = client(live, world.red_key)
    content = jsonl([GOOD]) + b"\n" + line.encode() + b"\n"  # a blank line between: skipped, still counted
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.create(file=("bad.jsonl", io.BytesIO(content), "application/jsonl"), purpose="batch")
    error = refused.value.body
    assert (error["code"], error["param"]) == ("invalid_batch_line", "file")
    assert error["message"].startswith("Line 3 of the file is not a valid batch request:")
    assert problem in error["message"], error["message"]
    assert not BatchFile.objects.exists()
    assert Usage.objects.get().error_code == "invalid_batch_line"


@pytest.mark.parametrize(("content", "purpose", "code"), [
    (b"", "batch", "empty_file"),
    (b"\n\n", "batch", "empty_file"),
    (b"\xff\xfe{}", "batch", "invalid_file_encoding"),
    (jsonl([GOOD]) + b"\x00", "batch", "invalid_file_encoding"),
    (jsonl([GOOD]), "assistants", "unsupported_purpose"),
])
def test_files_that_cannot_be_batch_input_are_refused(live, world, content, purpose, code):
    with pytest.raises(openai.BadRequestError) as refused:
        client(live, world.red_key).files.create(file=("in.jsonl", io.BytesIO(content)), purpose=purpose)
    assert refused.value.body["code"] == code
    assert not BatchFile.objects.exists()


def test_a_literal_backslash_u0000_and_a_byte_order_mark_are_fine(live, world):
    sdk = client(live, world.red_key)
    content = "\ufeff".encode() + jsonl([chat_line("a", "a path: C:\\u0000\\file")])
    uploaded = sdk.files.create(file=("bom.jsonl", io.BytesIO(content)), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating" and batch.request_counts.total == 1


def test_a_file_over_the_size_limit_is_refused(world, transactional_db, test_database_url):
    small = start_daphne(test_database_url, name="gateway-small-files", EP_BATCH_FILE_MAX_BYTES="300")
    try:
        sdk = openai.OpenAI(base_url=small.url + "/v1", api_key=world.red_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            upload(sdk, [chat_line(f"n{i}", "Hello there") for i in range(5)])
        assert refused.value.status_code == 413 and refused.value.body["code"] == "file_too_large"
        assert "at most 300 bytes" in refused.value.body["message"]
        assert upload(sdk, [GOOD]).bytes < 300
    finally:
        stop_process(small.process)


def test_a_line_for_another_endpoint_fails_the_batch_naming_it(live, world):
    sdk = client(live, world.red_key)
    embedding = {"custom_id": "vec", "method": "POST", "url": "/v1/embeddings",
                 "body": {"model": "demo/demo", "input": "x"}}
    batch = sdk.batches.create(input_file_id=upload(sdk, [GOOD, embedding]).id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert batch.status == "failed" and batch.failed_at and batch.request_counts.total == 0
    [error] = batch.errors.data
    assert (error.code, error.line, error.param) == ("mismatched_url", 2, "url")
    assert "/v1/embeddings" in error.message


@pytest.mark.parametrize(("changes", "code", "param"), [
    ({"endpoint": "/v1/completions"}, "unsupported_endpoint", "endpoint"),
    ({"completion_window": "1h"}, "invalid_request", "completion_window"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_request", "metadata"),
])
def test_batches_create_refuses_what_it_cannot_run(live, world, changes, code, param):
    sdk = client(live, world.red_key)
    arguments = {"input_file_id": upload(sdk, [GOOD]).id, "endpoint": "/v1/chat/completions",
                 "completion_window": "24h", **changes}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(**arguments)
    assert (refused.value.body["code"], refused.value.body["param"]) == (code, param)


def test_a_batch_output_file_is_not_batch_input(live, world):
    sdk = client(live, world.red_key)
    output = BatchFile.objects.create(id="file-output1", team=world.red, purpose="batch_output", filename="o.jsonl",
                                      bytes=len(jsonl([GOOD])), content=jsonl([GOOD]).decode())
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(input_file_id=output.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert refused.value.body["code"] == "invalid_input_file"


def test_another_teams_files_and_batches_are_indistinguishable_from_missing_ones(live, world):
    red, blue = client(live, world.red_key), client(live, world.blue_key)
    red_file = upload(red, [GOOD])
    red_batch = red.batches.create(input_file_id=red_file.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    blue_file = upload(blue, [GOOD])
    attempts = [
        (lambda file_id: blue.files.retrieve(file_id), "file_not_found"),
        (lambda file_id: blue.files.content(file_id), "file_not_found"),
        (lambda file_id: blue.files.delete(file_id), "file_not_found"),
        (lambda file_id: blue.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                             completion_window="24h"), "file_not_found"),
    ]
    for attempt, code in attempts:
        for unknown in (red_file.id, "file-doesnotexist"):
            with pytest.raises(openai.NotFoundError) as refused:
                attempt(unknown)
            assert refused.value.body["code"] == code
            assert refused.value.body["message"] == f"No file with id '{unknown}'."
    for unknown in (red_batch.id, "batch_doesnotexist"):
        for attempt in (blue.batches.retrieve, blue.batches.cancel):
            with pytest.raises(openai.NotFoundError) as refused:
                attempt(unknown)
            assert refused.value.body["message"] == f"No batch with id '{unknown}'."
    assert [f.id for f in blue.files.list()] == [blue_file.id]
    assert blue.batches.list().data == []
    assert red.batches.retrieve(red_batch.id).status == "validating"  # untouched by blue's cancel
    assert red.files.retrieve(red_file.id).id == red_file.id


@pytest.mark.parametrize("path", ["/v1/files/a%00b", "/v1/files/a%0Ab/content", "/v1/batches/a%00b",
                                  "/v1/batches/%E2%80%A8/cancel"])
def test_an_id_we_never_made_is_a_404_that_does_not_echo_it(live, world, path):
    method = "POST" if path.endswith("cancel") else "GET"
    response = httpx.request(method, live.url + path, headers={"Authorization": f"Bearer {world.red_key}"})
    assert response.status_code == 404
    assert "not an id this gateway makes" in response.json()["error"]["message"]
    row = Usage.objects.get()  # recorded, which a NUL in its message would have prevented on PostgreSQL
    assert row.error_code.endswith("_not_found") and "\x00" not in row.error_message


def test_list_cursors_and_filters_we_never_made_find_nothing(live, world):
    upload(client(live, world.red_key), [GOOD])
    headers = {"Authorization": f"Bearer {world.red_key}"}
    for query in ("/v1/files?after=a%00b", "/v1/files?purpose=a%00b", "/v1/batches?after=a%00b"):
        response = httpx.get(live.url + query, headers=headers)
        assert response.status_code == 200 and response.json()["data"] == []
