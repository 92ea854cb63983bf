"""A tool server's settings, checked and kept secret: the URL's SSRF guard (the
one provider base URLs have, providers/validation.py) and the encrypted secrets
(HTTP headers for kind http, environment variables for kind stdio)."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError

from providers import crypto
from providers.validation import base_url_validate


def server_url_validate(url: str) -> None:
    """The SSRF guard of provider base URLs (providers/validation.py), worded for tool servers."""
    if not url:
        raise ValidationError("An HTTP tool server needs its URL.", code="required")
    try:
        base_url_validate(url)
    except ValidationError as error:
        if error.code == "userinfo":
            raise ValidationError("Put credentials in the server's secrets (sent as HTTP headers), not in "
                                  "the URL.", code="userinfo") from None
        raise


def secrets_parse(text: str) -> dict[str, str]:
    """An operator's secrets box: a JSON object of strings. Raises ValidationError, never echoing values."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(f"Secrets are not valid JSON (line {error.lineno}, column {error.colno}).",
                              code="json") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError('Secrets must be a JSON object of names to text values, e.g. {"API_TOKEN": "..."}.',
                              code="shape")
    return value


def secrets_encrypt(values: dict[str, str]) -> str:
    return crypto.encrypt(json.dumps(values, sort_keys=True)) if values else ""


def server_secrets(server) -> dict[str, str]:
    return json.loads(crypto.decrypt(server.secrets_encrypted) or "{}")


def secret_names(server) -> list[str]:
    """Which secrets are set, by name only: what pages and the audit log may show."""
    try:
        return sorted(server_secrets(server))
    except ValueError:
        return ["(cannot be decrypted with the configured keys)"]
