"""The OAuth face of the gateway's scope vocabulary (:mod:`mcp_gateway.scopes`).

A grant's scopes are the gateway's own: ``mcp`` (everything its user may
use), ``mcp:tools`` / ``mcp:resources`` / ``mcp:prompts`` (every thing of a
kind) and ``mcp:tools:<name>`` (one tool or prompt, or one resource by URI).
What a token may reach is the intersection of its scopes and its user's
permissions; a request beyond its scopes gets 403 ``insufficient_scope``
naming the scope that would do (step-up). The metadata documents, the
consent page, the token endpoint and the authenticator ask these functions.
"""

from __future__ import annotations

from collections.abc import Collection

from django.utils.translation import gettext as _

from mcp_gateway import scopes as vocabulary
from mcp_gateway.routing import mount_at

BROAD = [vocabulary.ALL, vocabulary.TOOLS, vocabulary.RESOURCES, vocabulary.PROMPTS]


def scopes_supported(prefix: str | None = None) -> list[str]:
    """The scopes a token for the mount at ``prefix`` may carry: the broad ones, then one per tool and prompt."""
    mount = mount_at(prefix) if prefix is not None else None
    return vocabulary.scopes_supported(mount) if mount is not None else list(BROAD)


def required_scopes(prefix: str) -> list[str]:
    """What a client asks for when it knows nothing better (the 401 challenge's ``scope``): ``mcp``."""
    return [vocabulary.ALL]


def grants_access(granted: Collection[str]) -> bool:
    """Whether a grant's scopes reach anything at all (``mcp`` or one of its narrower forms)."""
    return any(scope == vocabulary.ALL or scope.startswith(vocabulary.ALL + ":") for scope in granted)


def describe(scope: str) -> str:
    """What ``scope`` allows, in words for the consent page."""
    kinds = {"tools": _("tool"), "resources": _("resource"), "prompts": _("prompt")}
    if scope == vocabulary.ALL:
        return _("Use this site's MCP servers as you: call their tools and read their resources.")
    parts = scope.split(":", 2)
    if len(parts) == 2 and parts[0] == vocabulary.ALL and parts[1] in kinds:
        return _("Use every %(kind)s you may use.") % {"kind": kinds[parts[1]]}
    if len(parts) == 3 and parts[0] == vocabulary.ALL and parts[1] in kinds:
        return _("Use the %(kind)s %(name)s.") % {"kind": kinds[parts[1]], "name": parts[2]}
    return scope
