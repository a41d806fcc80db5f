"""Transport guards: small stateless ASGI middleware in front of the consumers.

Consumers bypass Django's middleware, so nothing else checks ``Host`` against
``ALLOWED_HOSTS``, refuses foreign origins, or bounds request bodies. Each
guard checks one thing, answers a refusal itself, and otherwise passes the
request on untouched. :func:`guard` stacks them in their default order
(consecutive check-only guards as one middleware, :class:`Checks`).

- :class:`HostGuard`: ``Host`` not allowed by ``ALLOWED_HOSTS`` (Django's own
  ``get_host()``), 421 Misdirected Request, as the MCP SDK answers DNS
  rebinding attempts.
- :class:`OriginGuard`: an ``Origin`` other than the site's own and not in
  ``MCP_GATEWAY_ALLOWED_ORIGINS``, 403.
- :class:`ContentTypeGuard`: a POST whose body is not ``application/json``, 415.
- :class:`BodySizeGuard`: a POST body over ``MCP_GATEWAY_MAX_BODY_SIZE``, 413,
  or a body on a method that takes none (GET, DELETE), 400; decided from
  ``Content-Length`` or while the body streams in, never by buffering it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeGuard

from asgiref.sync import markcoroutinefunction
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed

from .conf import gateway_settings
from .exceptions import GatewayError, MisdirectedRequest, OriginNotAllowed, UnsupportedMediaType
from .http import (
    BODY_METHODS,
    ASGIApp,
    GatewayRequest,
    Message,
    Receive,
    Scope,
    Send,
    body_limit,
    body_refusal,
    remember,
)
from .resource import site_origin
from .transports.base import refuse


class Guard:
    """Base: run :meth:`check` on every HTTP request; a raised refusal is answered here.

    A guard decides before the request reaches the application, so it returns
    the application's coroutine (or its refusal's) instead of awaiting it: a
    long-lived stream keeps no frame of it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @markcoroutinefunction  # an ASGI 3 application to whoever inspects it, though it returns the coroutine
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            request = GatewayRequest.from_scope(scope)
            try:
                self.check(request)
            except GatewayError as exc:
                return refuse(send, exc, request)
        return self.app(scope, receive, send)

    def check(self, request: GatewayRequest) -> None:
        raise NotImplementedError


class HostGuard(Guard):
    """Django's ``get_host()`` decides; hosts it accepted are remembered, so most requests build no Django request."""

    def check(self, request: GatewayRequest) -> None:
        key = (
            request.headers.get("host"),
            request.headers.get("x-forwarded-host"),
            request.headers.get("x-forwarded-port"),
            tuple(request.scope.get("server") or ()),
        )
        if key in _accepted_hosts:
            return
        try:
            request.django_request.get_host()
        except DisallowedHost:
            raise MisdirectedRequest() from None
        remember(_accepted_hosts, key)


# What the Host check accepted, keyed by everything get_host() reads from a request; cleared when settings
# change, and bounded (ALLOWED_HOSTS may admit any subdomain).
_accepted_hosts: dict[tuple[object, ...], None] = {}


def _forget(**kwargs: object) -> None:
    _accepted_hosts.clear()


setting_changed.connect(_forget, dispatch_uid="mcp_gateway.guards.forget")


def origin_allowed(origin: str, request: GatewayRequest) -> bool:
    allowed = gateway_settings.ALLOWED_ORIGINS
    if "*" in allowed or origin in allowed:
        return True
    try:
        return origin == site_origin(request)
    except DisallowedHost:
        return False


class OriginGuard(Guard):
    def check(self, request: GatewayRequest) -> None:
        origin = request.origin
        if origin is not None and not origin_allowed(origin, request):
            raise OriginNotAllowed()


class ContentTypeGuard(Guard):
    def check(self, request: GatewayRequest) -> None:
        if request.method in BODY_METHODS and request.content_type != "application/json":
            raise UnsupportedMediaType()


class BodySizeGuard:
    """Bound every request's body without holding it in memory.

    A POST (PUT, PATCH) body may be up to ``MAX_BODY_SIZE``; GET and DELETE
    take none. A declared ``Content-Length`` over the limit is refused at once,
    unread: 413, or 400 ``body_not_allowed`` where the method takes no body.
    Otherwise a POST's body is counted as it arrives; past the limit the guard
    answers 413 and tells the application the client went away, so it stops
    waiting for more (the gateway's consumers then send nothing).

    A bodiless method's request is passed on as it is, so a stream keeps no
    wrapper: without a declared length HTTP/1.1 gives it no body, and the
    consumers refuse or drop whatever still arrives (HTTP/2 may send data
    undeclared). ``send`` is never wrapped: flow control looks through it to
    the server (:func:`mcp_gateway.flow.flow_control_for`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @markcoroutinefunction
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        request = GatewayRequest.from_scope(scope)
        limit = body_limit(request.method, gateway_settings.MAX_BODY_SIZE)
        declared = request.content_length
        if declared is not None and declared > limit:
            return refuse(send, body_refusal(limit), request)
        if not limit:
            return self.app(scope, receive, send)  # nothing to count: no frame kept for a stream
        return self.app(scope, CountingReceive(receive, send, limit, request), send)


class CountingReceive:
    """``receive`` as :class:`BodySizeGuard` passes it on: counts the body, and refuses it past the limit."""

    __slots__ = ("limit", "receive", "received", "refused", "request", "send")

    def __init__(self, receive: Receive, send: Send, limit: int, request: GatewayRequest) -> None:
        self.receive = receive
        self.send = send
        self.limit = limit
        self.request = request
        self.received = 0
        self.refused = False

    async def __call__(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = True
                await refuse(self.send, body_refusal(self.limit), self.request)
                return {"type": "http.disconnect"}
        return message


DEFAULT_GUARDS: tuple[Callable[[ASGIApp], ASGIApp], ...] = (HostGuard, OriginGuard, ContentTypeGuard, BodySizeGuard)


class Checks(Guard):
    """Consecutive check-only guards run as one middleware, in order.

    The same checks and refusals as stacking them, with one call instead of
    one per guard.
    """

    def __init__(self, app: ASGIApp, guards: Iterable[Guard]) -> None:
        super().__init__(app)
        self.guards = tuple(guards)

    def check(self, request: GatewayRequest) -> None:
        for each in self.guards:
            each.check(request)


def guard(app: ASGIApp, guards: Iterable[Callable[[ASGIApp], ASGIApp]] = DEFAULT_GUARDS) -> ASGIApp:
    """Wrap ``app`` in ``guards``, the first one outermost."""
    pending: list[type[Guard]] = []  # consecutive check-only guards, innermost first

    def flush(inner: ASGIApp) -> ASGIApp:
        if not pending:
            return inner
        wrapped = pending[0](inner) if len(pending) == 1 else Checks(inner, [g(inner) for g in reversed(pending)])
        pending.clear()
        return wrapped

    for wrapper in reversed(tuple(guards)):
        if _check_only(wrapper):
            pending.append(wrapper)
        else:
            app = wrapper(flush(app))
    return flush(app)


def _check_only(wrapper: Callable[[ASGIApp], ASGIApp]) -> TypeGuard[type[Guard]]:
    """Whether ``wrapper`` is a :class:`Guard` class: it only checks, and may share one middleware with others."""
    return isinstance(wrapper, type) and issubclass(wrapper, Guard)
