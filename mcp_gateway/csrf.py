"""CSRF protection for cookie-authenticated requests, by Django's own rules.

Consumers bypass Django's middleware, so the gateway runs
:class:`~django.middleware.csrf.CsrfViewMiddleware` itself on a bodiless copy
of the request: the Origin check against the host and
``CSRF_TRUSTED_ORIGINS``, the Referer check on HTTPS, and the token from the
``X-CSRFToken`` header (``CSRF_HEADER_NAME``) against the CSRF cookie or
session. Nothing here reimplements those rules.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from .auth import Credential
from .exceptions import CsrfFailed
from .http import GatewayRequest


def _never_called(request: HttpRequest) -> HttpResponse:  # pragma: no cover
    raise AssertionError("the CSRF check never calls the view")


def check_csrf(request: GatewayRequest, credential: Credential) -> None:
    """Raise :class:`CsrfFailed` if an ambient credential comes without CSRF proof."""
    if not credential.ambient:
        return
    django_request = request.django_request
    # A fresh instance: the middleware caches CSRF_TRUSTED_ORIGINS on itself.
    middleware = CsrfViewMiddleware(_never_called)
    middleware.process_request(django_request)
    if middleware.process_view(django_request, _never_called, (), {}) is not None:
        raise CsrfFailed()
