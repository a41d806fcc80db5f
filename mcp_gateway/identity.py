"""Who is calling: the one identity pipeline every gateway request that acts goes through.

:func:`identify_caller` runs, in this order and only here:

1. **authentication**, or the *pin*: most requests reach the worker running
   their session and carry the credential that opened it.
   :func:`pinned_session` admits those without the database: the live session
   knows its owner and the fingerprint of that credential, and revoking the
   credential (logout, password change, deactivation, deletion, token
   revocation) ends the session at once. A change that bypasses those signals
   (a bulk ``update()``, a deleted login session row) is still seen within
   ``RECHECK_INTERVAL`` seconds, when the database is asked again: in the
   background, started by a request that finds the last check in its last
   quarter, so the requests of an active client do not wait for it. Any other
   request of a session (another worker, another credential, a check older
   than the interval) takes the full path,
   :func:`~mcp_gateway.auth.authenticate`, and the transport then binds the
   session (:func:`~mcp_gateway.binding.bind`). A request naming no session
   (a 2026-07-28 POST, an ``initialize``) is answered from the worker's cache
   of credentials it verified in the last ``CREDENTIAL_CACHE_TTL`` seconds
   when it can (:func:`authenticate_cached`, :mod:`~mcp_gateway.credcache`);
2. the caller's **rate limit** (:func:`~mcp_gateway.ratelimit.check_rate`), for a POST;
3. **CSRF** for a credential the browser sent on its own
   (:func:`~mcp_gateway.csrf.check_csrf`). Whether the request's credential is
   ambient is decided by what *this* request presents, not by what opened the
   session: a session opened with a stream ticket issued to a login is then
   reached with that login's cookie, which needs the check.

Streams (``GET``) authenticate with :func:`~mcp_gateway.tickets.stream_credential`
instead (a ticket, or :func:`authenticate_cached`): a GET changes nothing, so it
is neither rate limited nor CSRF-checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError

from mcp_sessions import audit
from mcp_sessions.ids import hash_session_id

from .auth import Credential, authenticate, presented_credential, reuse
from .binding import BoundSession, bind
from .credcache import credential_cache
from .csrf import check_csrf
from .exceptions import GatewayError, SessionNotFound
from .http import GatewayRequest
from .ratelimit import check_rate
from .resource import resource_url
from .worker import worker

logger = logging.getLogger("mcp_gateway")


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified caller: their credential and, when the pin vouched for it, the session they named."""

    credential: Credential
    # None on the full path: the transport binds the session itself (it knows what a missing one means).
    session: BoundSession | None = None

    @property
    def user(self) -> Any:
        return self.credential.user


async def identify_caller(
    request: GatewayRequest, *, session_id: str | None = None, server: str, transport: str
) -> Caller:
    """Authenticate (or use the pin for ``session_id``), rate-limit and CSRF-check one request; refusals raise."""
    caller = await _authenticate(request, session_id, server=server, transport=transport)
    request.user = caller.user
    if request.method == "POST":  # the limit counts POSTs: a stream (GET) or an ending (DELETE) sends no message
        await check_rate(caller.user)
    check_csrf(request, caller.credential)
    return caller


async def _authenticate(request: GatewayRequest, session_id: str | None, *, server: str, transport: str) -> Caller:
    if session_id is None:
        # No session (a 2026-07-28 request, an initialize): the worker's cache of verified credentials.
        return Caller(await authenticate_cached(request))
    pinned = pinned_session(request, session_id, server=server, transport=transport)
    if pinned is not None:
        return pinned
    # A session's request its pin cannot vouch for asks the database: it is the check that pins the session
    # (a login ticket's session is pinned only once a request presents the login and passes it).
    return Caller(await authenticate(request))


async def authenticate_cached(request: GatewayRequest, *, max_age: float | None = None) -> Credential:
    """:func:`~mcp_gateway.auth.authenticate`, answered from this worker's cache of verified credentials when it can.

    A miss is checked by the database and stored, if this worker hears of
    revocations (:meth:`~mcp_gateway.credcache.RevocationFeed.joined`) and no
    revocation arrived while it was checked. With ``max_age``, a cached
    credential checked longer ago than that many seconds is checked again.
    """
    presented = presented_credential(request)
    if presented is None or not credential_cache.enabled():
        return await authenticate(request)
    cached = credential_cache.get(presented.fingerprint)
    if cached is not None and cached.audience and cached.audience != resource_url(request):
        cached = None  # verified for another resource (RFC 8707): the full check refuses it here
    if cached is not None and max_age is not None and time.monotonic() - cached.checked_at > max_age:
        cached = None
    if cached is not None:
        reuse(request, cached)
        return cached if cached.ambient == presented.ambient else dataclasses.replace(cached, ambient=presented.ambient)
    epoch, started = credential_cache.epoch, time.monotonic()
    credential = await authenticate(request)
    if credential.fingerprint == presented.fingerprint and await worker.revocations.joined():
        credential = dataclasses.replace(credential, checked_at=started)
        credential_cache.put(credential, epoch=epoch)
    return credential


def pinned_session(request: GatewayRequest, session_id: str | None, *, server: str, transport: str) -> Caller | None:
    """The caller and their session, if this worker can vouch for both without the database; else None."""
    if session_id is None:
        return None
    host = worker.local_host_by_id_hash(hash_session_id(session_id))
    if host is None:
        return None
    presented = presented_credential(request)
    if presented is None or not host.admits(presented.fingerprint, server=server, transport=transport):
        return None
    if host.pin.renewal_due():
        host.pin.renewing = True
        task = asyncio.get_running_loop().create_task(_renew(host, request, session_id, server, transport))
        _renewals.add(task)
        task.add_done_callback(_renewals.discard)
    credential = host.credential
    if credential.ambient != presented.ambient:
        credential = dataclasses.replace(credential, ambient=presented.ambient)
    return Caller(credential, BoundSession(pk=host.pk, ref=host.ref, channel_name=host.inbox))


# Renewals under way; referenced so that they are not collected before they finish.
_renewals: set[asyncio.Task[None]] = set()


async def _renew(host: Any, request: GatewayRequest, session_id: str, server: str, transport: str) -> None:
    """The full check of a pinned request, off its path: if it passes, the pin counts from when it began."""
    started = time.monotonic()
    try:
        credential = await authenticate(request)
        try:
            await bind(request, credential, session_id, server=server, transport=transport, checked_at=started)
        except SessionNotFound as exc:
            audit.record_refusal(exc, request, credential.user)  # a foreign session is recorded here too
            raise
    except (GatewayError, DatabaseError) as exc:
        # Not renewed: the pin lapses on time, and the next request takes the full path and gets its answer.
        logger.debug("Pinned credential of session %s not renewed: %r", host.ref, exc)
    finally:
        host.pin.renewing = False
