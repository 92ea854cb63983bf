"""How the bedrock adapter's aiobotocore client authenticates and where it goes.

Static keys from the provider's credential (providers/adapters/cloud_credentials.py),
or with options `credential_type: "aws_role"` the host's own role through botocore's
default chain; either may then assume options `role_arn` (STS AssumeRole, with
`external_id` if set), refreshed by botocore before the temporary keys expire,
the way a `role_arn` profile in ~/.aws/config is.
"""

from __future__ import annotations

from typing import Any

from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioCredentials,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.config import Config

from providers.adapters.base import AdapterConfig
from providers.adapters.cloud_credentials import aws_keys

SERVICE = "bedrock-runtime"
DEFAULT_REGION = "us-east-1"


def _client_config(config: AdapterConfig) -> Config:
    return Config(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},  # the gateway retries, with its breaker
        max_pool_connections=int(config.options.get("max_connections", 100)),
        # AWS_ENDPOINT_URL* in the environment must not redirect a configured provider.
        ignore_configured_endpoint_urls=True,
    )


def _static_keys(config: AdapterConfig) -> dict[str, Any]:
    """The stored keys as create_client arguments; none for the host's role (botocore's default
    chain: instance profile, ECS task role, web identity). Raises ValueError on unusable keys."""
    if config.options.get("credential_type") == "aws_role":
        return {}
    keys = aws_keys(config.credential)
    return {"aws_access_key_id": keys.access_key_id, "aws_secret_access_key": keys.secret_access_key,
            "aws_session_token": keys.session_token}


def client_kwargs(config: AdapterConfig) -> dict[str, Any]:
    """`create_client` arguments for a provider; raises ValueError on an unusable credential."""
    kwargs: dict[str, Any] = {
        "region_name": config.options.get("region") or DEFAULT_REGION,
        "endpoint_url": config.base_url or None,  # None: bedrock-runtime.<region>.amazonaws.com
        "config": _client_config(config),
    }
    keys = _static_keys(config)
    # With a role to assume, the keys (or the host's role) only sign the AssumeRole call.
    return kwargs if config.options.get("role_arn") else kwargs | keys


class AssumedRole:
    """A credential provider for an AioSession: the role in options `role_arn`, assumed
    with the provider's own keys (or the host's role) and refreshed by botocore before
    it expires (its AssumeRole fetcher, as for a `role_arn` profile in ~/.aws/config)."""

    METHOD = "assume-role"

    def __init__(self, config: AdapterConfig) -> None:
        self._config = config
        self._keys = _static_keys(config)  # ValueError here: checked with the other arguments

    async def load_credentials(self) -> AioDeferredRefreshableCredentials:
        opts = self._config.options
        extra = {"RoleSessionName": "execution-platform"}
        if opts.get("external_id"):
            extra["ExternalId"] = opts["external_id"]
        fetcher = AioAssumeRoleCredentialFetcher(self._sts_client, await self._source(), opts["role_arn"],
                                                 extra_args=extra, cache={})
        return AioDeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method=self.METHOD)

    async def _source(self) -> Any:
        if self._keys:
            return AioCredentials(self._keys["aws_access_key_id"], self._keys["aws_secret_access_key"],
                                  self._keys["aws_session_token"])
        return await AioSession().get_credentials()  # the host's own role signs AssumeRole

    def _sts_client(self, service: str, **credentials: Any) -> Any:
        opts = self._config.options
        return AioSession().create_client(service, region_name=opts.get("region") or DEFAULT_REGION,
                                          endpoint_url=opts.get("sts_endpoint_url") or None,
                                          config=_client_config(self._config), **credentials)
