"""The words of the scope vocabulary, below the models: what an access token may be limited to.

:mod:`mcp_gateway.scopes` is the vocabulary's reference (what each scope reaches, OAuth's ``scopes_supported``,
step-up); the model app only stores a token's scopes and needs to know a well-formed one, to offer a user the
scopes of what they may use (:func:`offered_scopes`, filled by the gateway through :func:`offer_scopes`), and to
say one in words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.utils.translation import gettext as _

ALL = "mcp"
TOOLS = "mcp:tools"
RESOURCES = "mcp:resources"
PROMPTS = "mcp:prompts"
BROAD = (ALL, TOOLS, RESOURCES, PROMPTS)
KINDS = ("tools", "resources", "prompts")
MAX_SCOPE_LENGTH = 300


def scope_for(kind: str, name: str) -> str:
    """The narrowest scope naming ``name`` of ``kind`` (``tools``, ``resources`` or ``prompts``)."""
    return f"mcp:{kind}:{name}"


def valid_scope(scope: str) -> bool:
    """Whether ``scope`` is a word of the vocabulary: a broad scope or ``mcp:<kind>:<name>``."""
    if scope in BROAD:
        return True
    kind, _sep, name = scope.removeprefix("mcp:").partition(":")
    return (
        scope.startswith("mcp:")
        and kind in KINDS
        and bool(name.strip())
        and len(scope) <= MAX_SCOPE_LENGTH
        and scope.isprintable()
    )


def token_scopes(tools: Iterable[str] = (), scopes: Iterable[str] = ()) -> list[str]:
    """A token's scopes from tool names and scopes, sorted, each once; ``ValueError`` names an ill-formed one."""
    found = {scope_for("tools", tool.strip()) for tool in tools if tool.strip()}
    found.update(scope.strip() for scope in scopes if scope.strip())
    bad = sorted(scope for scope in found if not valid_scope(scope))
    if bad:
        raise ValueError(f"Not a scope: {', '.join(bad)}")
    return sorted(found)


# What a user may limit a token of their own to, beyond the broad scopes: given by the app that knows the servers.
ScopeOffer = Callable[[Any], Iterable[str]]
_offers: list[ScopeOffer] = []


def offer_scopes(offer: ScopeOffer) -> None:
    """Have ``offer(user)`` name the narrow scopes ``user`` may limit a token of their own to (once per offer).

    The gateway registers its own when it is ready (:func:`mcp_gateway.scopes.offered`: what the user may use on
    the default mount), so that this app, which may not import the gateway, offers what the gateway serves.
    """
    if offer not in _offers:
        _offers.append(offer)


def offered_scopes(user: Any) -> list[str]:
    """What ``user`` may limit a token to on Your MCP access: every tool, resource or prompt, or one they may use.

    The broad scopes first (not ``mcp``: a token limited to everything is not limited), then each narrow scope
    the registered offers name, sorted, each once; an ill-formed one is left out.
    """
    narrow = {scope for offer in _offers for scope in offer(user) if valid_scope(scope) and scope not in BROAD}
    return [TOOLS, RESOURCES, PROMPTS, *sorted(narrow)]


def describe_scope(scope: str) -> str:
    """A scope in words, for the user (translated): "All tools", "The tool “echo”", …; an unknown one as it is."""
    broad = {ALL: _("Everything"), TOOLS: _("All tools"), RESOURCES: _("All resources"), PROMPTS: _("All prompts")}
    if scope in broad:
        return str(broad[scope])
    kind, _sep, name = scope.removeprefix("mcp:").partition(":")
    one = {
        "tools": _("The tool “%(name)s”"),
        "resources": _("The resource “%(name)s”"),
        "prompts": _("The prompt “%(name)s”"),
    }
    return str(one[kind] % {"name": name}) if kind in one and name else scope
