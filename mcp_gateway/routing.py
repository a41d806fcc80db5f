"""Mounting MCP servers in front of a site's ASGI application.

In ``asgi.py``::

    django_asgi_app = get_asgi_application()

    from mcp_gateway.routing import mcp_application

    application = mcp_application(django_asgi_app)

HTTP requests under a mount's prefix (``MCP_GATEWAY_PREFIX``, ``/mcp/`` by
default) go through the transport guards to the gateway's consumers (a
browser opening an endpoint gets a page about it, :mod:`mcp_gateway.page`);
everything else, WebSocket and lifespan included, goes to the wrapped app.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from asgiref.sync import markcoroutinefunction

from .auth import describes_resources
from .conf import gateway_settings
from .exceptions import MethodNotAllowed, NotFound
from .guards import DEFAULT_GUARDS, OriginGuard, guard
from .http import ASGIApp, GatewayRequest, Receive, Scope, Send, send_error
from .mounts import MESSAGES_PATH, SSE_PATH, STREAMABLE_HTTP_PATH, TICKETS_PATH, Mount
from .page import PAGE_PATHS, EndpointPage, wants_page
from .resource import WELL_KNOWN_PATH, ProtectedResourceMetadata, metadata_prefix
from .transports.base import GatewayConsumer
from .transports.sse import MessagesConsumer, SSEConsumer
from .transports.streamable import StreamableHTTPConsumer
from .transports.tickets import TicketsConsumer


def _route_path(scope: Scope) -> str:
    """The path below the application's root path."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path


def _under(prefix: str, path: str) -> bool:
    """Whether ``path`` (below the root path) is under the mount at ``prefix``, or is that prefix without its "/"."""
    return path.startswith(prefix) or path == prefix[:-1]


# Every McpRouter of this process, for gateway_path().
_routers: weakref.WeakSet[McpRouter] = weakref.WeakSet()


def gateway_path(path: str, root_path: str = "") -> bool:
    """Whether an HTTP request for ``path`` would reach a gateway mount through an :class:`McpRouter` of this process.

    The launcher (:mod:`mcp_gateway.daphne`) asks as a request's headers arrive, to hold requests for the
    gateway to its limits while daphne is still receiving them; other paths keep daphne's own behaviour.
    """
    route = _route_path({"path": path, "root_path": root_path})
    return any(_under(mount.prefix, route) for router in list(_routers) for mount in router.mounts)


def mount_at(prefix: str) -> Mount | None:
    """The mount of this process's routers at ``prefix``, if one is mounted there (OAuth metadata names its scopes)."""
    return next((mount for router in list(_routers) for mount in router.mounts if mount.prefix == prefix), None)


class MountApplication:
    """Dispatch a mount's paths to its consumers, by path then method; a browser's GET gets the endpoint's page.

    Called by the guards in front of it, never as a site's top-level
    application: it returns the consumer's coroutine rather than awaiting it,
    so no frame of its own stays alive as long as each stream does.
    """

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        self.routes: dict[str, tuple[tuple[str, ...], type[GatewayConsumer]]] = {
            STREAMABLE_HTTP_PATH: (("POST", "GET", "DELETE"), StreamableHTTPConsumer),
            SSE_PATH: (("GET",), SSEConsumer),
            MESSAGES_PATH: (("POST",), MessagesConsumer),
            TICKETS_PATH: (("POST",), TicketsConsumer),
        }

    @markcoroutinefunction  # an ASGI 3 app to whoever inspects it, though it returns the coroutine
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        path = _route_path(scope)
        below = path[len(self.mount.prefix) :] if path != self.mount.prefix[:-1] else ""
        route = self.routes.get(below)
        if route is None:
            return send_error(send, NotFound())
        methods, consumer_class = route
        if scope["method"] not in methods:
            return send_error(send, MethodNotAllowed(methods))
        GatewayRequest.from_scope(scope).mount_prefix = self.mount.prefix
        if below in PAGE_PATHS and wants_page(GatewayRequest.from_scope(scope)):
            return EndpointPage(self.mount, below)(scope, receive, send)
        return consumer_class.for_scope(scope)(self.mount)(scope, receive, send)


class McpRouter:
    """Send HTTP requests under a mount prefix to the gateway, the rest to ``inner``."""

    def __init__(
        self,
        inner: ASGIApp,
        mounts: Iterable[Mount],
        guards: Iterable[Callable[[ASGIApp], ASGIApp]] = DEFAULT_GUARDS,
    ) -> None:
        self.inner = inner
        guards = tuple(guards)
        self.mounts = sorted(mounts, key=lambda m: len(m.prefix), reverse=True)
        self.apps = [(m.prefix, guard(MountApplication(m), guards)) for m in self.mounts]
        # Each mount's protected resource metadata (RFC 9728): a public document, read cross-origin too.
        public_guards = tuple(g for g in guards if g is not OriginGuard)
        self.metadata_apps = {m.prefix: guard(ProtectedResourceMetadata(m.prefix), public_guards) for m in self.mounts}
        _routers.add(self)

    @markcoroutinefunction  # returns the chosen application's coroutine: no frame of its own per stream
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            path = _route_path(scope)
            for prefix, app in self.apps:
                if _under(prefix, path):
                    return app(scope, receive, send)
            if path.startswith(WELL_KNOWN_PATH) and describes_resources():
                metadata_for = metadata_prefix(path, [m.prefix for m in self.mounts])
                if metadata_for is not None:
                    return self.metadata_apps[metadata_for](scope, receive, send)
        return self.inner(scope, receive, send)


def mcp_application(
    django_app: ASGIApp,
    *,
    servers: Mapping[str, str | Any] | None = None,
    guards: Iterable[Callable[[ASGIApp], ASGIApp]] = DEFAULT_GUARDS,
) -> McpRouter:
    """Serve MCP in front of ``django_app``.

    ``servers`` maps URL prefixes to MCP servers (objects or dotted paths); by
    default it is ``{MCP_GATEWAY_PREFIX: MCP_GATEWAY_SERVER}``. ``guards``
    replaces the transport guards; the default stack is the safe one.
    """
    if servers is None:
        servers = {gateway_settings.PREFIX: gateway_settings.SERVER}
    return McpRouter(django_app, [Mount(prefix, server) for prefix, server in servers.items()], guards)
