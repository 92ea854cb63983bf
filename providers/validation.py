"""Where a provider may point: the SSRF guard on Provider.base_url.

The gateway sends prompts and a provider credential to base_url, so a base URL
aimed at the cloud metadata service (169.254.169.254) or a service inside the
network would turn the gateway into a proxy for whoever can set it. Checked at
save time (Provider.clean): the scheme, no credentials in the URL, and every
address the host resolves to. Loopback and private addresses (a local vLLM or
Ollama, the test suite's fakes) only when EP_ALLOW_PRIVATE_PROVIDER_URLS is on.
Link-local and metadata addresses never. Residual risk: DNS can change after
the check (rebinding); see docs/SECURITY.md.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

SCHEMES = ("http", "https")
# Cloud metadata services outside the link-local ranges (AWS IPv6, Alibaba, Oracle).
METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _resolve(host: str) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise ValidationError(f"The host '{host}' does not resolve; the base URL must name a reachable server.",
                              code="unresolvable") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def _refusal(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA or address.is_link_local:
        return "a link-local or cloud metadata address"
    if address.is_multicast or address.is_unspecified:
        return "a multicast or unspecified address"
    private = address.is_loopback or address.is_private or (
        isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"))
    if private:
        if settings.EP_ALLOW_PRIVATE_PROVIDER_URLS:
            return None
        return "a loopback or private address (set EP_ALLOW_PRIVATE_PROVIDER_URLS=1 to allow local servers)"
    if address.is_reserved:  # after loopback: ::1 is in IPv6's reserved ::/8
        return "a reserved address"
    return None


def base_url_validate(url: str) -> None:
    """Raise ValidationError unless the gateway may send a credential to `url`.
    An empty URL is the provider's public API and always allowed."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValidationError("A base URL must start with http:// or https://.", code="scheme")
    if parts.username or parts.password:
        raise ValidationError("Put the credential in the API key field, not in the base URL.", code="userinfo")
    host = parts.hostname
    if not host:
        raise ValidationError("A base URL must name a host.", code="host")
    for address in _resolve(host):
        reason = _refusal(address)
        if reason:
            raise ValidationError(f"The host '{host}' resolves to {address}, {reason}.", code="address")
