"""The OAuth scope vocabulary: the one seam where what a token may do is named.

Until the gateway has a vocabulary of its own (``mcp_gateway.scopes``), one
scope, ``mcp``, stands for "use this site's MCP servers as you", and every
mount requires it. Swapping the vocabulary means changing these three
functions: the metadata documents, the consent page, the token endpoint and
the authenticator's 403 all ask them.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

MCP = "mcp"
_DESCRIPTIONS = {MCP: _("Use this site's MCP servers as you: call their tools and read their resources.")}


def scopes_supported(prefix: str | None = None) -> list[str]:
    """The scopes a token for the mount at ``prefix`` (any mount: None) may carry."""
    return [MCP]


def required_scopes(prefix: str) -> list[str]:
    """The scopes every request to the mount at ``prefix`` needs (a token without one gets 403, naming them)."""
    return [MCP]


def describe(scope: str) -> str:
    """What ``scope`` allows, in words for the consent page."""
    return str(_DESCRIPTIONS.get(scope, scope))
