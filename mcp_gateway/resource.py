"""Each mount as an OAuth protected resource: its identifier (RFC 8707) and its metadata document (RFC 9728).

A mount's resource identifier is the URL clients connect to, without its
trailing "/": ``https://site.example/mcp`` for the mount at ``/mcp/``
(clients compare the two by path prefix, so the slash-less form matches
both spellings of the URL). Its metadata is served at
``/.well-known/oauth-protected-resource/mcp`` (the well-known path inserted
before the resource's own, RFC 9728 section 3.1), and at
``/.well-known/oauth-protected-resource`` as well when a router serves one
mount only. What the document says (which authorization server, which
scopes) is the configured authenticators' to give
(:func:`~mcp_gateway.auth.protected_resource_metadata`); none gives one, and
the path is not found, as before.

The metadata paths go through the router's guards like the mount's own
(``Host`` checked against ``ALLOWED_HOSTS``), but for the Origin check: the
document is public, and browser-based clients read it cross-origin (it is
sent with ``Access-Control-Allow-Origin: *``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import MethodNotAllowed, NotFound
from .http import MEMO_SIZE, GatewayRequest, Receive, Scope, Send, json_bytes, send_error, send_response

WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"
CORS_HEADERS = ((b"access-control-allow-origin", b"*"),)


def site_origin(request: GatewayRequest) -> str:
    """The request's own origin, as Django computes it (``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST``).

    :class:`~django.core.exceptions.DisallowedHost` if ``ALLOWED_HOSTS`` refuses the host. An origin computed is
    remembered under everything Django reads for it (the scope's scheme and server, the Host and forwarding
    headers), so a client sending the same ones on every request builds no Django request for it.
    """
    headers = request.headers
    proxy = settings.SECURE_PROXY_SSL_HEADER
    key = (
        request.scope.get("scheme"),
        tuple(request.scope.get("server") or ()),
        headers.get("host"),
        headers.get("x-forwarded-host"),
        headers.get("x-forwarded-port"),
        headers.get(proxy[0].removeprefix("HTTP_").replace("_", "-").lower()) if proxy else None,
    )
    origin = _origins.get(key)
    if origin is None:
        django_request = request.django_request
        origin = f"{django_request.scheme}://{django_request.get_host()}"
        if len(_origins) >= MEMO_SIZE:
            _origins.clear()
        _origins[key] = origin
    return origin


# The origins site_origin() computed, bounded; cleared when settings change (ALLOWED_HOSTS, the proxy settings).
_origins: dict[tuple[object, ...], str] = {}


def _forget(**kwargs: object) -> None:
    _origins.clear()


setting_changed.connect(_forget, dispatch_uid="mcp_gateway.resource.forget")


def resource_path(prefix: str, root_path: str = "") -> str:
    """The path of a mount's resource identifier: its prefix below the root path, without the trailing "/"."""
    return (root_path.rstrip("/") + prefix).rstrip("/") or "/"


def resource_url(request: GatewayRequest, prefix: str | None = None) -> str:
    """The resource identifier of the mount ``request`` is for (or of the one at ``prefix``)."""
    prefix = prefix or request.mount_prefix or "/"
    return site_origin(request) + resource_path(prefix, request.scope.get("root_path", ""))


def metadata_url(request: GatewayRequest, prefix: str | None = None) -> str:
    """Where the protected resource metadata of that mount is served."""
    prefix = prefix or request.mount_prefix or "/"
    path = resource_path(prefix, request.scope.get("root_path", ""))
    return site_origin(request) + WELL_KNOWN_PATH + (path if path != "/" else "")


def canonical_resource(value: str) -> str:
    """``value`` as resources are compared: scheme and host lower-cased, no trailing "/", no query or fragment."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def metadata_prefix(path: str, prefixes: list[str]) -> str | None:
    """The mount prefix whose metadata ``path`` asks for, among ``prefixes``; None if none.

    The bare well-known path names the one mount when there is only one.
    """
    if path == WELL_KNOWN_PATH or path == WELL_KNOWN_PATH + "/":
        return prefixes[0] if len(prefixes) == 1 else None
    if not path.startswith(WELL_KNOWN_PATH + "/"):
        return None
    below = path[len(WELL_KNOWN_PATH) :].rstrip("/") + "/"
    return below if below in prefixes else None


class ProtectedResourceMetadata:
    """Answer ``GET /.well-known/oauth-protected-resource<prefix>`` for one mount (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self._answer(scope, send)

    async def _answer(self, scope: Scope, send: Send) -> None:
        from .auth import protected_resource_metadata

        request = GatewayRequest.from_scope(scope)
        request.mount_prefix = self.prefix
        if request.method == "OPTIONS":
            await send_response(
                send,
                HTTPStatus.NO_CONTENT,
                content_type=None,
                headers=[*CORS_HEADERS, (b"access-control-allow-methods", b"GET")],
            )
            return
        if request.method not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed(("GET", "HEAD", "OPTIONS")))
            return
        document: dict[str, Any] | None = protected_resource_metadata(request)
        if document is None:
            await send_error(send, NotFound())
            return
        await send_response(send, HTTPStatus.OK, json_bytes(document), headers=CORS_HEADERS)
