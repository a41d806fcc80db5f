"""Redirect URIs: which a client may register, and when a requested one matches a registered one.

Matching is exact (string equality), with one exception native clients need
(RFC 8252 section 7.3): a registered loopback URI (``http://127.0.0.1:<port>/…``,
``http://[::1]:<port>/…``, ``http://localhost:<port>/…``) matches the same URI
on any port. Registering is allowed for https URIs, plain http on loopback
only, and an app's private-use scheme (``cursor://…``), never for schemes a
browser would run or read locally.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
# Schemes a redirect must never use: a browser would run them, or read local data.
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ws", "wss"})


def _loopback_parts(uri: str) -> tuple[str, str, str, str] | None:
    """``(host, path, query, fragment)`` of an http loopback URI, else None."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return None
    if parts.scheme != "http" or parts.username or parts.password:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if host.lower() not in LOOPBACK_HOSTS:
        return None
    return host.lower(), parts.path, parts.query, parts.fragment


def redirect_uri_matches(requested: str, registered: list[str]) -> bool:
    """Whether ``requested`` is one of ``registered``: exactly, or a loopback one but for its port."""
    if requested in registered:
        return True
    wanted = _loopback_parts(requested)
    if wanted is None:
        return False
    return any(_loopback_parts(uri) == wanted for uri in registered)


def registrable(uri: object) -> bool:
    """Whether a client may register ``uri`` as a redirect URI."""
    if not isinstance(uri, str) or len(uri) > 2000 or any(c.isspace() for c in uri):
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.fragment or parts.username or parts.password:
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme == "http":
        return _loopback_parts(uri) is not None
    return bool(parts.scheme) and parts.scheme.lower() not in FORBIDDEN_SCHEMES
