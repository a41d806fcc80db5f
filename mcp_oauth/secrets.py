"""The OAuth secrets this app issues: random, tagged by kind, stored only as SHA-256 (as personal tokens are).

A tag tells the authenticators apart without the database: ``mcpa_`` access
tokens, ``mcpr_`` refresh tokens, ``mcpc_`` authorization codes, ``mcps_``
client secrets, each followed by 43 url-safe characters (256 random bits).
"""

from __future__ import annotations

import re
import secrets as _secrets

from mcp_sessions.ids import hash_token as hash_token

ACCESS_TAG = "mcpa_"
REFRESH_TAG = "mcpr_"
CODE_TAG = "mcpc_"
CLIENT_SECRET_TAG = "mcps_"
_SHAPE = re.compile(r"mcp[arcs]_[A-Za-z0-9_-]{43}")


def new_secret(tag: str) -> str:
    return tag + _secrets.token_urlsafe(32)


def is_shaped(secret: str, tag: str) -> bool:
    """Whether ``secret`` looks like one of this app's secrets of the kind ``tag`` (no database needed)."""
    return secret.startswith(tag) and _SHAPE.fullmatch(secret) is not None
