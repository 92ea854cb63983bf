"""What the cloud provider kinds need besides a key: where (region, project, API
version) and a credential of their shape. Kept in Provider.options, checked here
before anything is saved, so a provider that cannot work is refused with a
sentence instead of failing every call later.

The region and project end up inside the provider's own hostname or path
(`bedrock-runtime.<region>.amazonaws.com`, `<location>-aiplatform.googleapis.com`),
so they are plain identifiers: nothing in them can point a credential at another
host. Only base_url can, and that stays admin-only and SSRF-checked
(providers/validation.py), as does a service-account key's own `token_uri`.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from providers.adapters.cloud_credentials import aws_keys, google_service_account_info
from providers.validation import base_url_validate

# Option keys the dashboard's provider form edits as fields of their own.
CLOUD_OPTIONS = ("region", "project", "api_version", "credential_type", "role_arn", "external_id")
REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+){0,5}")
PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}")  # includes domain-scoped ids, example.com:project
API_VERSION = re.compile(r"[A-Za-z0-9.-]{1,40}")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
CREDENTIAL_TYPES = {
    "api_key": ("API key", ("azure_openai",)),
    "entra_token": ("Microsoft Entra ID token", ("azure_openai",)),
    "aws_keys": ("AWS access keys (JSON)", ("bedrock",)),
    "aws_role": ("The gateway host's AWS role (no key stored)", ("bedrock",)),
}
VERTEX_KINDS = ("vertex_gemini", "vertex_anthropic")


def cloud_options_errors(*, kind: str, base_url: str, options: dict) -> dict[str, str]:
    """Field name -> what is wrong, for the cloud settings of a provider of `kind`.
    Only the kind's own keys are judged: `project` in an openai provider's options is
    its OpenAI project, not a Google one."""
    if kind == "azure_openai":
        return _azure_errors(base_url, options)
    if kind == "bedrock":
        return _bedrock_errors(options)
    if kind in VERTEX_KINDS:
        return _vertex_errors(options)
    return {}


def _azure_errors(base_url: str, options: dict) -> dict[str, str]:
    errors = _credential_type_errors("azure_openai", options)
    if options.get("api_version") and not API_VERSION.fullmatch(options["api_version"]):
        errors["api_version"] = "An API version looks like 2024-10-21 or 2025-04-01-preview."
    if not base_url:
        errors["base_url"] = ("An Azure OpenAI provider needs its resource's endpoint as the base URL, e.g. "
                              "https://my-resource.openai.azure.com.")
    return errors


def _bedrock_errors(options: dict) -> dict[str, str]:
    errors = _credential_type_errors("bedrock", options) | _region_errors(options, "its AWS region, e.g. eu-central-1")
    if options.get("role_arn") and not ROLE_ARN.fullmatch(options["role_arn"]):
        errors["role_arn"] = "A role ARN looks like arn:aws:iam::123456789012:role/bedrock-caller."
    if options.get("external_id") and not EXTERNAL_ID.fullmatch(options["external_id"]):
        errors["external_id"] = "An external id is 2 or more letters, digits and +=,.@:/- characters."
    if options.get("sts_endpoint_url"):
        try:  # where AssumeRole is signed and sent: the same guard as a base URL
            base_url_validate(options["sts_endpoint_url"])
        except ValidationError as error:
            errors["options"] = "sts_endpoint_url: " + " ".join(error.messages)
    return errors


def _vertex_errors(options: dict) -> dict[str, str]:
    errors = _region_errors(options, "its location, e.g. europe-west4 or us-east5")
    project = options.get("project") or ""
    if not project:
        errors["project"] = "A Vertex AI provider needs its Google Cloud project id."
    elif not PROJECT.fullmatch(project):
        errors["project"] = "A Google Cloud project id is lower-case letters, digits and dashes, e.g. my-project-42."
    return errors


def _region_errors(options: dict, what: str) -> dict[str, str]:
    region = options.get("region") or ""
    if not region:
        return {"region": f"This provider needs {what}."}
    if len(region) > 30 or not REGION.fullmatch(region):
        return {"region": "A region is lower-case letters, digits and dashes, e.g. eu-central-1 or us-east5."}
    return {}


def _credential_type_errors(kind: str, options: dict) -> dict[str, str]:
    credential_type = options.get("credential_type") or ""
    if credential_type and kind not in CREDENTIAL_TYPES.get(credential_type, ("", ()))[1]:
        return {"credential_type": f"That credential type is not one a {kind} provider takes."}
    return {}


def credential_validate(*, kind: str, options: dict, credential: str) -> None:
    """Raise ValidationError unless `credential` has the shape a provider of `kind` takes."""
    try:
        if kind == "bedrock" and options.get("credential_type") != "aws_role":
            aws_keys(credential)
        elif kind in VERTEX_KINDS:
            info = google_service_account_info(credential)
            if info is not None:
                _token_uri_validate(info["token_uri"])
    except ValueError as error:
        raise ValidationError(str(error), code="credential") from None


def _token_uri_validate(token_uri: str) -> None:
    # google-auth posts a signed assertion to the key file's own token_uri: the same
    # guard as a base URL, so a key file cannot aim the gateway at an internal address.
    try:
        base_url_validate(token_uri)
    except ValidationError as error:
        raise ValueError(f"The key file's token_uri is refused: {' '.join(error.messages)}") from None
