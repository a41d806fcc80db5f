"""CSRF protection for cookie-authenticated requests, by Django's own rules.

Consumers bypass Django's middleware, so the gateway runs
:class:`~django.middleware.csrf.CsrfViewMiddleware` itself on a bodiless copy
of the request: the Origin check against the host and
``CSRF_TRUSTED_ORIGINS``, the Referer check on HTTPS, and the token from the
``X-CSRFToken`` header (``CSRF_HEADER_NAME``) against the CSRF cookie or
session. Nothing here reimplements those rules.
"""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from .auth import Credential
from .exceptions import CsrfFailed
from .http import GatewayRequest, remember


def _never_called(request: HttpRequest) -> HttpResponse:  # pragma: no cover
    raise AssertionError("the CSRF check never calls the view")


def check_csrf(request: GatewayRequest, credential: Credential) -> None:
    """Raise :class:`CsrfFailed` if an ambient credential comes without CSRF proof.

    The middleware's verdict depends only on the request's method, scheme and
    a few headers (Host, Origin, Referer, the cookies, the CSRF header, the
    proxy headers) and on settings; a client sends the same ones on every POST,
    so verdicts that passed are remembered under exactly those values (unless
    the token lives in the login session, ``CSRF_USE_SESSIONS``).
    """
    if not credential.ambient:
        return
    key = None if settings.CSRF_USE_SESSIONS else _verdict_key(request)
    if key is not None and key in _passed:
        return
    django_request = request.django_request
    # A fresh instance: the middleware caches CSRF_TRUSTED_ORIGINS on itself.
    middleware = CsrfViewMiddleware(_never_called)
    middleware.process_request(django_request)
    if middleware.process_view(django_request, _never_called, (), {}) is not None:
        raise CsrfFailed()
    if key is not None:
        remember(_passed, key)


def _verdict_key(request: GatewayRequest) -> tuple[object, ...]:
    headers = request.headers
    header_name = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-").lower()
    return (
        request.method,
        request.scope.get("scheme"),
        tuple(request.scope.get("server") or ()),
        *(headers.get(name) for name in _VERDICT_HEADERS),
        headers.get(header_name),
        *(headers.get(name.lower()) for name in _proxy_headers()),
    )


_VERDICT_HEADERS = ("host", "x-forwarded-host", "x-forwarded-port", "origin", "referer", "cookie")


def _proxy_headers() -> tuple[str, ...]:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return (proxy[0].removeprefix("HTTP_").replace("_", "-"),) if proxy else ()


# Verdicts that passed, cleared when settings change and bounded.
_passed: dict[tuple[object, ...], None] = {}


def _forget(**kwargs: object) -> None:
    _passed.clear()


setting_changed.connect(_forget, dispatch_uid="mcp_gateway.csrf.forget")
