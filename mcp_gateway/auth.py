"""Who is calling: the authentication step run on every gateway request.

Each authenticator recognises one kind of credential. They are tried in the
order of ``MCP_GATEWAY_AUTHENTICATORS``; the first that finds its kind of
credential decides. A request nobody recognises is refused with 401 and a
``WWW-Authenticate`` challenge from every authenticator.

A :class:`Credential` says whether it is *ambient*, sent by a browser on its
own (a cookie): only ambient credentials need the CSRF check. A bearer token is
never ambient: a page on another origin cannot make a browser send it. It is a
property of what a request presents, never of what opened its session: a
session opened with a stream ticket is then reached with the login cookie.

A credential also has a *fingerprint*: a digest naming the very secret
presented (this token, this login), which an authenticator can compute from a
request without the database (:func:`presented_credential`). A session
remembers the fingerprint it was opened with, so that a later request carrying
the same credential to the worker running it can skip the database (see
:mod:`mcp_gateway.binding`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.utils.module_loading import import_string

from mcp_sessions.ids import hash_token, is_token_shaped
from mcp_sessions.models import AccessToken
from mcp_sessions.revocation import login_session_hash

from .conf import gateway_settings
from .exceptions import AuthenticationRequired, InvalidToken
from .http import GatewayRequest


@dataclass(frozen=True, slots=True)
class Credential:
    """An authenticated caller."""

    user: Any
    scheme: str
    ambient: bool
    token_id: int | None = None
    expires_at: datetime | None = None
    login_session_hash: str = ""
    # Digest of the secret presented (never the secret); empty when the authenticator cannot name one.
    fingerprint: str = ""
    # Whether the database vouched for the credential this fingerprint names just now. A login ticket vouches for
    # the login only as it was when the ticket was issued: the session it opens is pinned once a request presents
    # the login itself and passes the full check.
    verified: bool = True
    # ``time.monotonic()`` when the database vouched for it (about when this was made, unless it comes from the
    # cache of verified credentials, :mod:`mcp_gateway.credcache`): what the pin and the cache count their age from.
    checked_at: float = field(default_factory=time.monotonic, compare=False)
    # What issued the credential, when it is neither a personal token (``token_id``) nor a login: a non-secret
    # reference its sessions and stream tickets record, so that revoking it ends them (an OAuth grant: "oauth:<pk>").
    credential_ref: str = ""
    # The resource (RFC 8707) it was issued for, when it is bound to one: reused only for requests to that resource.
    audience: str = ""
    # What the credential may reach (:mod:`mcp_gateway.scopes`): None for the login and an unscoped token, whose
    # reach is their user's permissions; a scoped token's or an OAuth grant's scopes otherwise.
    scopes: frozenset[str] | None = None
    # Whether a request beyond ``scopes`` is answered 403 insufficient_scope (an OAuth grant: the client can ask
    # for more) rather than as if what it names did not exist (a personal token: its scope was chosen for good).
    step_up: bool = False
    # The OAuth client the grant is for, if it is one: call records name it.
    client_id: str = ""


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request presents, as far as an authenticator can tell without I/O."""

    fingerprint: str
    # Sent by a browser on its own (a cookie): the request needs the CSRF check.
    ambient: bool


def token_fingerprint(token_hash: str) -> str:
    return f"bearer:{token_hash}"


def login_fingerprint(login_hash: str) -> str:
    return f"session:{login_hash}"


class Authenticator(Protocol):
    scheme: str

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` challenge naming this scheme."""
        ...

    # Optional: ``challenge_for(request) -> str``, the challenge for this
    # request (one naming the resource's metadata URL, RFC 9728), used instead
    # of :meth:`challenge` when present. A later challenge of a scheme already
    # named is left out (one ``Bearer`` challenge, the first).
    #
    # Optional: ``protected_resource_metadata(request) -> dict | None``, the
    # RFC 9728 metadata of the mount ``request`` names: the first authenticator
    # that gives one has the gateway serve it at
    # ``/.well-known/oauth-protected-resource<prefix>`` (:mod:`mcp_gateway.resource`).

    async def authenticate(self, request: GatewayRequest) -> Credential | None:
        """The caller, or ``None`` when no usable credential of this kind is present."""
        ...

    # Optional: ``fingerprint(request) -> str | None``, without I/O: the
    # fingerprint :meth:`authenticate` would give the request's credential of
    # this kind, "" if it cannot be valid, ``None`` if none is present. An
    # authenticator without it disables the database-free path. With it, the
    # attribute ``ambient: bool`` says whether its credentials are sent by a
    # browser on its own (missing: ``True``, so the CSRF check runs).
    #
    # Optional: ``reuse(request, credential) -> None``, without I/O: set on the
    # request what :meth:`authenticate` would have set, when a credential it
    # gave earlier is reused for it (see :func:`reuse`).


class SessionCookieAuthenticator:
    """The site's own login: Django's session cookie, exactly as views see it (:func:`site_login`)."""

    scheme = "session"
    ambient = True

    def challenge(self) -> str:
        return f'Cookie realm="mcp", cookie-name="{settings.SESSION_COOKIE_NAME}"'

    def fingerprint(self, request: GatewayRequest) -> str | None:
        session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)
        return login_fingerprint(login_session_hash(session_key)) if session_key else None

    def reuse(self, request: GatewayRequest, credential: Credential) -> None:
        """The login session, unloaded, and its user: the CSRF check may read the session (``CSRF_USE_SESSIONS``).

        Attached when the Django request is built: a request whose CSRF verdict is remembered builds none.
        """
        session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)

        def attach(django_request: HttpRequest) -> None:
            engine = import_module(settings.SESSION_ENGINE)
            django_request.session = engine.SessionStore(session_key)
            django_request.user = credential.user

        request.on_django_request(attach)

    async def authenticate(self, request: GatewayRequest) -> Credential | None:
        user = await site_login(request)
        if user is None:
            return None
        login_hash = login_session_hash(request.cookies[settings.SESSION_COOKIE_NAME])
        return Credential(
            user=user,
            scheme=self.scheme,
            ambient=self.ambient,
            login_session_hash=login_hash,
            fingerprint=login_fingerprint(login_hash),
        )


async def site_login(request: GatewayRequest) -> Any | None:
    """The user logged in to the site with the request's session cookie, exactly as views see them; None if nobody.

    Resolved with :func:`django.contrib.auth.get_user`, so session hash verification (a password change logs the
    session out), inactive users and custom backends behave as they do for the rest of the site.
    """
    session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    django_request = request.django_request
    engine = import_module(settings.SESSION_ENGINE)
    django_request.session = engine.SessionStore(session_key)
    user = await database_sync_to_async(get_user)(django_request)
    if not user.is_authenticated:
        return None
    django_request.user = user
    return user


class BearerTokenAuthenticator:
    """``Authorization: Bearer <token>`` with a personal access token (:class:`~mcp_sessions.models.AccessToken`).

    A request that presents a bearer token is decided by it alone: an unknown,
    expired or revoked token, or one whose owner is inactive, is refused with
    ``error="invalid_token"`` rather than falling back to a cookie.
    """

    scheme = "bearer"
    ambient = False

    def challenge(self) -> str:
        return 'Bearer realm="mcp"'

    def fingerprint(self, request: GatewayRequest) -> str | None:
        kind, _, secret = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer":
            return None
        secret = secret.strip()
        return token_fingerprint(hash_token(secret)) if is_token_shaped(secret) else ""

    async def authenticate(self, request: GatewayRequest) -> Credential | None:
        kind, _, secret = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer":
            return None
        token = await database_sync_to_async(AccessToken.objects.authenticate)(secret.strip())
        if token is None:
            raise InvalidToken(headers=[(b"www-authenticate", b'Bearer realm="mcp", error="invalid_token"')])
        return Credential(
            user=token.user,
            scheme=self.scheme,
            ambient=self.ambient,
            token_id=token.pk,
            expires_at=token.expires_at,
            fingerprint=token_fingerprint(token.token_hash),
            scopes=token.scope_set,
        )


@functools.lru_cache(maxsize=1)
def get_authenticators() -> tuple[Authenticator, ...]:
    """The configured authenticators, made once; forgotten when settings change."""
    return tuple(import_string(path)() for path in gateway_settings.AUTHENTICATORS)


def _forget_authenticators(**kwargs: Any) -> None:
    get_authenticators.cache_clear()


setting_changed.connect(_forget_authenticators, dispatch_uid="mcp_gateway.auth.forget_authenticators")


def presented_credential(request: GatewayRequest) -> Presented | None:
    """The fingerprint of the credential :func:`authenticate` would decide on, and whether it is ambient, without I/O.

    ``None`` when it cannot be known this way: no credential, or an
    authenticator ahead of the deciding one that cannot compute fingerprints.
    """
    for authenticator in get_authenticators():
        fingerprint = getattr(authenticator, "fingerprint", None)
        if fingerprint is None:
            return None
        value = fingerprint(request)
        if value is not None:
            return Presented(value, getattr(authenticator, "ambient", True)) if value else None
    return None


def reuse(request: GatewayRequest, credential: Credential) -> None:
    """Attach ``credential``, verified for an earlier request presenting the same secret, to ``request``."""
    for authenticator in get_authenticators():
        if authenticator.scheme == credential.scheme:
            adopt = getattr(authenticator, "reuse", None)
            if adopt is not None:
                adopt(request, credential)
            return


async def authenticate(request: GatewayRequest) -> Credential:
    """The caller's credential, or :class:`AuthenticationRequired`."""
    authenticators = get_authenticators()
    for authenticator in authenticators:
        credential = await authenticator.authenticate(request)
        if credential is not None:
            return credential
    raise AuthenticationRequired(headers=[(b"www-authenticate", challenge_header(request, authenticators).encode())])


def challenge_header(request: GatewayRequest, authenticators: tuple[Authenticator, ...]) -> str:
    """Every authenticator's challenge for ``request``, one per scheme (the first authenticator's of each)."""
    challenges: list[str] = []
    seen: set[str] = set()
    for authenticator in authenticators:
        challenge_for = getattr(authenticator, "challenge_for", None)
        challenge: str = challenge_for(request) if challenge_for is not None else authenticator.challenge()
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme not in seen:
            seen.add(scheme)
            challenges.append(challenge)
    return ", ".join(challenges)


def describes_resources() -> bool:
    """Whether an authenticator gives protected resource metadata: else the gateway serves none."""
    return any(hasattr(a, "protected_resource_metadata") for a in get_authenticators())


def protected_resource_metadata(request: GatewayRequest) -> dict[str, Any] | None:
    """The RFC 9728 metadata of the mount ``request`` names, from the first authenticator that gives one."""
    for authenticator in get_authenticators():
        metadata = getattr(authenticator, "protected_resource_metadata", None)
        if metadata is not None:
            document: dict[str, Any] | None = metadata(request)
            if document is not None:
                return document
    return None
