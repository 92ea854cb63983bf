"""The cloud SDKs' DEBUG lines carry no credential: botocore logs a signed request's
headers and canonical request (with the session token) and STS's answer (with the
temporary keys); Vertex sends Google OAuth access tokens."""

from __future__ import annotations

import logging

import pytest

SESSION_TOKEN = "FwoGZXIvYXdzEcanary/session+token0123456789=="
SECRET_KEY = "wJalrXUtnFEMIcanary/K7MDENG+bPxRfiCY"
ACCESS_TOKEN = "ya29.a0AfH6SMBcanary-access-token_0123456789"


@pytest.fixture
def console_handler() -> logging.Handler:
    return next(h for h in logging.getLogger().handlers if h.get_name() == "console")


@pytest.mark.parametrize("logger, msg, args", [
    ("botocore.auth", "CanonicalRequest:\n%s", (
        f"POST\n/model/m/converse\n\ncontent-type:application/json\nx-amz-security-token:{SESSION_TOKEN}\n",)),
    ("botocore.endpoint", "Sending http request: %s", (
        f"<AWSPreparedRequest headers={{'X-Amz-Security-Token': b'{SESSION_TOKEN}'}}>",)),
    ("botocore.parsers", "Response body:\n%s", (
        f"b'<AssumeRoleResponse><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>{SECRET_KEY}"
        f"</SecretAccessKey><SessionToken>{SESSION_TOKEN}</SessionToken></Credentials></AssumeRoleResponse>'",)),
    ("anthropic._base_client", "Request options: %s", ({"headers": {"Authorization": f"Bearer {ACCESS_TOKEN}"}},)),
    ("google_genai._api_client", "refreshed token %s", (ACCESS_TOKEN,)),
])
def test_the_console_handler_redacts_cloud_credentials(console_handler, logger, msg, args):
    record = logging.getLogger(logger).makeRecord(logger, logging.DEBUG, __file__, 1, msg, args, None)
    assert console_handler.filter(record)
    out = console_handler.format(record)
    assert "[REDACTED]" in out
    for secret in (SESSION_TOKEN, SECRET_KEY, ACCESS_TOKEN, "canary"):
        assert secret not in out
