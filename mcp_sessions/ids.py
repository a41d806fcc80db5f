"""Session identifiers: how they are made, checked and stored.

A session ID is a bearer secret that travels in URLs, so it is random (256
bits from :mod:`secrets`, never derived from time or a counter) and the
database keeps only its SHA-256. Logs and admin use :func:`public_ref`, a
prefix of the hash that identifies a record without revealing the ID.
"""

from __future__ import annotations

import hashlib
import re
import secrets

SESSION_ID_BYTES = 32
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_well_formed(session_id: str) -> bool:
    return _SESSION_ID_RE.fullmatch(session_id) is not None


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def public_ref(id_hash: str) -> str:
    """A short, non-secret handle for a session: the start of its ID's hash."""
    return id_hash[:12]


# Personal access tokens: "mcp_" + 43 random url-safe characters. The first
# TOKEN_PREFIX_LENGTH characters are stored in clear so owners can tell their
# tokens apart; the rest only as part of the whole token's SHA-256.
TOKEN_TAG = "mcp_"
TOKEN_PREFIX_LENGTH = 12
_TOKEN_RE = re.compile(r"mcp_[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return TOKEN_TAG + secrets.token_urlsafe(SESSION_ID_BYTES)


def is_token_shaped(token: str) -> bool:
    return _TOKEN_RE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# Stream tickets: "mst_" + 43 random url-safe characters, stored hashed, single use.
TICKET_TAG = "mst_"
_TICKET_RE = re.compile(r"mst_[A-Za-z0-9_-]{43}")


def new_ticket() -> str:
    return TICKET_TAG + secrets.token_urlsafe(SESSION_ID_BYTES)


def is_ticket_shaped(ticket: str) -> bool:
    return _TICKET_RE.fullmatch(ticket) is not None
