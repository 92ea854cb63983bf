"""The cloud providers' credentials, as the one encrypted text field every provider has.

A provider stores one credential (providers/crypto.py encrypts it at rest); the
cloud kinds need more than a key, so the text holds it:
- Google Vertex AI: a service-account key file's JSON (`"type": "service_account"`),
  or an OAuth access token (`ya29...`) taken as is, which expires within the hour;
- AWS Bedrock: a JSON object `{"access_key_id", "secret_access_key", "session_token"?}`
  (the AWS CLI's `aws_` spellings too), or nothing when the provider's options say
  `credential_type: "aws_role"`: the gateway host's own role (instance profile, ECS
  task role, IRSA), found by the AWS SDK's default chain.

Pure parsing, no Django, no network: the adapters use it to build their clients,
and the dashboard's form to refuse what would not work before it is saved.
Messages never quote the credential.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")
_AWS_ALIASES = {
    "access_key_id": ("access_key_id", "aws_access_key_id", "AccessKeyId"),
    "secret_access_key": ("secret_access_key", "aws_secret_access_key", "SecretAccessKey"),
    "session_token": ("session_token", "aws_session_token", "SessionToken"),
}


def _json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("The credential looks like JSON but does not parse; paste the whole file.") from None
    if not isinstance(value, dict):
        raise ValueError("The credential must be a JSON object.")
    return value


# -- Google -------------------------------------------------------------------------


def google_service_account_info(text: str) -> dict[str, Any] | None:
    """The service-account key's fields, or None when the text is an access token."""
    info = _json_object(text)
    if info is None:
        if not text.strip() or any(c.isspace() for c in text.strip()):
            raise ValueError("A Google credential is a service-account key file (JSON) or one access token.")
        return None
    if info.get("type") != "service_account":
        raise ValueError("Only a service-account key file works here (its \"type\" is \"service_account\").")
    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not info.get(name)]
    if missing:
        raise ValueError(f"The service-account key file lacks {', '.join(missing)}.")
    return info


def google_credentials(text: str) -> Any:
    """google-auth Credentials for the text: refreshable for a service account, fixed for a token."""
    from google.oauth2 import credentials as oauth2_credentials
    from google.oauth2 import service_account

    info = google_service_account_info(text)
    if info is None:
        return oauth2_credentials.Credentials(token=text.strip())
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=list(GOOGLE_SCOPES))
    except (ValueError, TypeError, KeyError) as exc:  # e.g. a private key that is not PEM
        raise ValueError(f"The service-account key file is not usable ({type(exc).__name__}).") from None


def google_auth_failure(exc: BaseException) -> tuple[str, str] | None:
    """(kind, message) when a Vertex call failed in google-auth, minting or refreshing
    its token, else None. A refused grant (a disabled account, a deleted key) is `auth`;
    a token endpoint that is down or slow is worth a retry."""
    from google.auth import exceptions as auth_errors

    if not isinstance(exc, auth_errors.GoogleAuthError):
        return None
    retryable = bool(getattr(exc, "retryable", False)) or isinstance(exc, auth_errors.TransportError)
    # google-auth's messages quote the token endpoint's answer, never the key or the assertion.
    detail = str(exc)[:300]
    if retryable:
        return "unavailable", f"the Google token endpoint failed ({type(exc).__name__}: {detail})"
    return "auth", f"Google refused the credential ({type(exc).__name__}: {detail})"


def google_access_token(text: str) -> str | None:
    """The text itself when it is an access token, else None (a service account, refreshed by the SDK)."""
    return text.strip() if google_service_account_info(text) is None else None


# -- AWS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def aws_keys(text: str) -> AwsKeys:
    """Static AWS keys from the credential's JSON object."""
    info = _json_object(text)
    if info is None:
        raise ValueError('AWS keys are a JSON object: {"access_key_id": "AKIA...", "secret_access_key": "..."} '
                         '(and "session_token" for temporary keys).')
    found = {name: next((info[a] for a in aliases if info.get(a)), None) for name, aliases in _AWS_ALIASES.items()}
    if not found["access_key_id"] or not found["secret_access_key"]:
        raise ValueError("AWS keys need both access_key_id and secret_access_key.")
    if not all(isinstance(v, str) for v in found.values() if v is not None):
        raise ValueError("AWS key fields are strings.")
    return AwsKeys(found["access_key_id"], found["secret_access_key"], found["session_token"])
