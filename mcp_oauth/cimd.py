"""Client ID Metadata Documents: a ``client_id`` that is an https URL names the client's own metadata, fetched here.

Fetching a URL a stranger names is a server-side request forgery surface, so
the fetch is narrow: https only; the host's addresses are resolved once and
every one must be public (no private, loopback, link-local, multicast,
reserved or unspecified address), and the connection goes to the address
checked, not to a second resolution (DNS rebinding); no redirects; at most
:data:`MAX_BYTES` and :data:`TIMEOUT` seconds, whole. A document must name
its own URL as ``client_id``, list its redirect URIs (used exactly as listed)
and authenticate with ``none``. What it says is kept on the client's row, fresh
for as long as its caching headers allow and never more than
:data:`MAX_CACHE_AGE`. ``MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK`` (tests only)
admits loopback addresses, over plain HTTP too.

Hand-written over :mod:`http.client` (one line why): checking the address
and then connecting to that very address, with TLS verified against the host
name, is not something the HTTP clients at hand expose.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from django.utils import timezone

from mcp_gateway.conf import gateway_settings

MAX_BYTES = 16 * 1024
TIMEOUT = 5.0
MAX_CACHE_AGE = 3600


class DocumentRefused(Exception):
    """The URL or the document at it is not an acceptable client metadata document (the message says why)."""


@dataclass(frozen=True)
class Document:
    metadata: dict[str, Any]
    fresh_until: datetime


def is_document_url(client_id: str) -> bool:
    """Whether ``client_id`` is shaped as a metadata document URL (https, a host, a path below the root)."""
    parts = urlsplit(client_id)
    allowed = ("https", "http") if gateway_settings.OAUTH_CIMD_ALLOW_LOOPBACK else ("https",)
    return parts.scheme in allowed and bool(parts.hostname) and parts.path not in ("", "/")


def fetch(url: str) -> Document:
    """The metadata document at ``url``, validated, with how long it may be kept; :class:`DocumentRefused` if not."""
    parts = urlsplit(url)
    if parts.fragment or parts.username or parts.password or not parts.hostname:
        raise DocumentRefused("client_id must be an https URL without credentials or fragment")
    allow_loopback = gateway_settings.OAUTH_CIMD_ALLOW_LOOPBACK
    if parts.scheme != "https" and not (allow_loopback and parts.scheme == "http"):
        raise DocumentRefused("client metadata documents are fetched over https only")
    hosts = gateway_settings.OAUTH_CLIENT_ID_METADATA_HOSTS
    if "*" not in hosts and parts.hostname.lower() not in {h.lower() for h in hosts}:
        raise DocumentRefused(f"metadata documents from {parts.hostname} are not accepted here")
    deadline = time.monotonic() + TIMEOUT
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _public_address(parts.hostname, port, allow_loopback=allow_loopback)
    if parts.scheme == "http" and not ipaddress.ip_address(address).is_loopback:
        raise DocumentRefused("plain http is allowed on loopback only")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body, headers = _get(parts.scheme, parts.hostname, address, port, path, deadline)
    metadata = _parse(body, url)
    return Document(metadata=metadata, fresh_until=timezone.now() + timedelta(seconds=_cache_age(headers)))


def _public_address(host: str, port: int, *, allow_loopback: bool) -> str:
    """The address to connect to: every address ``host`` resolves to must be public (or loopback, if allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise DocumentRefused(f"{host} does not resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise DocumentRefused(f"{host} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback and allow_loopback:
            continue
        if not ip.is_global or ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private:
            raise DocumentRefused(f"{host} resolves to a non-public address")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to an address checked beforehand, with TLS verified against the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _get(scheme: str, host: str, address: str, port: int, path: str, deadline: float) -> tuple[bytes, Any]:
    remaining = deadline - time.monotonic()
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, address, port, remaining)
    try:
        connection.request("GET", path, headers={"Accept": "application/json", "User-Agent": "django-mcp-gateway"})
        response = connection.getresponse()
        if response.status != 200:
            raise DocumentRefused(f"the document URL answered {response.status} (redirects are not followed)")
        declared = response.getheader("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
            raise DocumentRefused(f"the document is over {MAX_BYTES} bytes")
        body = bytearray()
        while len(body) <= MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DocumentRefused(f"the document did not arrive within {TIMEOUT:g} s")
            if connection.sock is not None:
                connection.sock.settimeout(remaining)
            chunk = response.read1(4096)
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_BYTES:
            raise DocumentRefused(f"the document is over {MAX_BYTES} bytes")
        return bytes(body), response.headers
    except TimeoutError:
        raise DocumentRefused(f"the document did not arrive within {TIMEOUT:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DocumentRefused(f"the document could not be fetched ({type(exc).__name__})") from None
    finally:
        connection.close()


def _parse(body: bytes, url: str) -> dict[str, Any]:
    try:
        metadata = json.loads(body)
    except (ValueError, RecursionError):
        raise DocumentRefused("the document is not JSON") from None
    if not isinstance(metadata, dict):
        raise DocumentRefused("the document is not a JSON object")
    if metadata.get("client_id") != url:
        raise DocumentRefused("the document's client_id is not its own URL")
    method = metadata.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise DocumentRefused("a metadata document client must use token_endpoint_auth_method 'none'")
    if "client_secret" in metadata or "client_secret_expires_at" in metadata:
        raise DocumentRefused("a metadata document must not carry a client secret")
    return metadata


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def _cache_age(headers: Any) -> int:
    """Seconds the response may be kept, by ``Cache-Control`` then ``Expires``; 0 without either; at most an hour."""
    control = headers.get("cache-control", "") or ""
    if re.search(r"(?:^|,)\s*(no-store|no-cache)\b", control, re.IGNORECASE):
        return 0
    match = _MAX_AGE.search(control)
    if match:
        return min(int(match.group(1)), MAX_CACHE_AGE)
    expires = headers.get("expires")
    if expires:
        try:
            seconds = (parsedate_to_datetime(expires) - timezone.now()).total_seconds()
        except (TypeError, ValueError):
            return 0
        return max(0, min(int(seconds), MAX_CACHE_AGE))
    return 0
