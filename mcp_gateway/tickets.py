"""Stream tickets: opening a stream with a short-lived, single-use credential.

A browser's ``EventSource`` cannot send headers, and a session ID in a URL is
no credential. So a page first asks ``POST <prefix>tickets`` (with its login
cookie and CSRF token, or a bearer token) for a ticket, then opens
``GET <prefix>sse?ticket=…``. A ticket is 256 random bits, stored hashed,
valid ``MCP_GATEWAY_TICKET_LIFETIME`` seconds, usable once, and bound to the
user and to the Origin that asked for it: presented with another ``Origin``
(a page elsewhere), replayed, or expired, it is refused (401, and an audit
row). Presented with no Origin it is accepted: browsers send none on a
same-origin ``EventSource``, and a client that is not a browser could claim
any Origin anyway.

A ticket issued to a login dies with it: logging out voids it, and so does a
password change, through the signal or not (the ticket remembers the user's
session auth hash). The stream it opens is not pinned to the login until a
request presents the login cookie and passes the full check, so a login
session deleted without any signal (expired, cleared) admits nothing either.
"""

from __future__ import annotations

from channels.db import database_sync_to_async

from mcp_sessions.models import StreamTicket

from .auth import Credential, login_fingerprint, token_fingerprint
from .conf import gateway_settings
from .exceptions import InvalidTicket, TicketRequired
from .http import GatewayRequest
from .identity import authenticate_cached

CHALLENGE = [(b"www-authenticate", b'Ticket realm="mcp", error="invalid_ticket"')]


async def issue_ticket(request: GatewayRequest, credential: Credential) -> str:
    secret: str = await database_sync_to_async(StreamTicket.objects.issue)(
        credential.user,
        origin=request.origin or "",
        lifetime=gateway_settings.TICKET_LIFETIME,
        token_id=credential.token_id,
        login_session_hash=credential.login_session_hash,
        credential_ref=credential.credential_ref,
    )
    return secret


async def stream_credential(request: GatewayRequest) -> Credential:
    """Who opens a stream: the ticket if the URL has one, else the usual authenticators.

    Those through the worker's cache of credentials it verified (:func:`~mcp_gateway.identity.authenticate_cached`),
    as a request naming no session is: streams opened one after another with one credential (a client's many
    sessions, a reconnecting client) cost the database a check now and then, not one each. Only one checked in the
    first quarter of ``RECHECK_INTERVAL``: the session's pin counts from that check, and one renewed at once would
    cost the database more than the check saved (:meth:`~mcp_gateway.sessions.pin.CredentialPin.renewal_due`).
    A ticket is never cached: it is single-use.
    """
    values = request.query.get("ticket")
    if values is None:
        if gateway_settings.REQUIRE_TICKET_FOR_BROWSERS and request.origin is not None:
            raise TicketRequired(headers=CHALLENGE)
        return await authenticate_cached(request, max_age=gateway_settings.RECHECK_INTERVAL / 4)
    ticket = None
    if len(values) == 1:
        ticket = await database_sync_to_async(StreamTicket.objects.redeem)(values[0], request.origin or "")
    if ticket is None:
        raise InvalidTicket(headers=CHALLENGE)
    # The session this stream opens is pinned to what the ticket was issued for: the page's POSTs carry that.
    if ticket.token is not None:
        fingerprint = token_fingerprint(ticket.token.token_hash)
    elif ticket.login_session_hash:
        fingerprint = login_fingerprint(ticket.login_session_hash)
    else:
        fingerprint = ""
    return Credential(
        user=ticket.user,
        scheme="ticket",
        ambient=False,
        token_id=ticket.token_id,
        expires_at=ticket.token.expires_at if ticket.token else None,
        login_session_hash=ticket.login_session_hash,
        fingerprint=fingerprint,
        credential_ref=ticket.credential_ref,
        # The redeem checked a token as it is now; a login only as far as the ticket can tell (not its session).
        verified=ticket.token is not None,
    )
