"""The scope vocabulary: what a credential (a scoped access token, an OAuth grant) may reach on a mount.

A credential without scopes (``Credential.scopes is None``: the site's login, an
unscoped access token) is limited by its user's permissions alone. A scoped
credential reaches only what its scopes name, *and* what its user may use
(:mod:`mcp_gateway.permissions`): the intersection.

The vocabulary, one module so that tokens, OAuth and the docs agree:

- ``mcp``: everything on the mount (what the user may use);
- ``mcp:tools``, ``mcp:resources``, ``mcp:prompts``: every tool, every resource and resource template, every
  prompt;
- ``mcp:tools:<name>``: one tool; ``mcp:prompts:<name>``: one prompt; ``mcp:resources:<uri>``: one resource,
  named by its URI, or one template, named by its URI template (every URI it matches).

A thing outside a credential's scopes behaves as if it did not exist for that credential (lists leave it out, a
call answers as for an unknown name), except where the credential asks for step-up (an OAuth grant,
``Credential.step_up``): there a request for it is answered ``403`` with ``WWW-Authenticate: Bearer
error="insufficient_scope", scope="<the scope it needs>"`` (RFC 6750 section 3.1, the MCP authorization spec's
step-up), whatever the name, so the answer tells nothing of what exists.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from mcp_sessions.scoping import ALL, PROMPTS, RESOURCES, TOOLS, scope_for, valid_scope

from .conf import gateway_settings
from .exceptions import InsufficientScope
from .permissions import declared_names, templates_matching, usable

__all__ = [
    "ALL",
    "PROMPTS",
    "RESOURCES",
    "TOOLS",
    "allows",
    "offered",
    "scope_for",
    "scopes_supported",
    "step_up",
    "valid_scope",
]

# The kinds of thing a scope names, by the method that uses one.
KIND_OF_METHOD: Mapping[str, str] = {
    "tools/call": "tools",
    "resources/read": "resources",
    "resources/subscribe": "resources",
    "prompts/get": "prompts",
}
# The field of each method's params that names the thing it uses.
NAME_FIELD: Mapping[str, str] = {
    "tools/call": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "prompts/get": "name",
}


def allows(scopes: Collection[str] | None, kind: str, names: Iterable[str]) -> bool:
    """Whether ``scopes`` reach a thing of ``kind`` known by any of ``names`` (a URI and the template it matches).

    ``None``: an unscoped credential, limited by its user's permissions alone.
    """
    if scopes is None or ALL in scopes or f"mcp:{kind}" in scopes:
        return True
    return any(scope_for(kind, name) in scopes for name in names)


def scopes_supported(mount: Any) -> list[str]:
    """Every scope a client may ask for on ``mount`` (a :class:`~mcp_gateway.mounts.Mount`), for OAuth metadata.

    The broad scopes, then one per tool and prompt the mount's server declares (an ``MCPServer``'s, or those a
    low-level server's :func:`~mcp_gateway.permissions.protect` names), sorted.
    """
    names = declared_names(mount.site_server)
    narrow = sorted(scope_for(kind, name) for kind in ("tools", "prompts") for name in names[kind])
    return [ALL, TOOLS, RESOURCES, PROMPTS, *narrow]


def offered(user: Any) -> list[str]:
    """The narrow scopes ``user`` may limit a token of their own to: one per thing they may use on the default mount.

    Each tool, prompt, resource and resource template of ``MCP_GATEWAY_SERVER`` that
    :func:`~mcp_gateway.permissions.usable` lets ``user`` use, decided as a request would be now (a permission
    granted later widens nothing: the token is limited by its scopes *and* its user's permissions). Registered with
    :func:`mcp_sessions.scoping.offer_scopes` when the app is ready (Your MCP access offers them); sync code only.
    """
    if not gateway_settings.SERVER:
        return []
    server = import_string(gateway_settings.SERVER)
    kinds = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resource_templates": "resources"}
    return [scope_for(kinds[kind], name) for kind, names in usable(server, user).items() for name in names]


def step_up(credential: Any, message: Any, mount: Any) -> None:
    """Raise :class:`~mcp_gateway.exceptions.InsufficientScope` for a request a step-up credential's scopes miss.

    ``message`` is a parsed JSON-RPC message; only requests that use one thing (``tools/call``,
    ``resources/read``, ``prompts/get``) are looked at. A credential that does not ask for step-up
    (``Credential.step_up`` false) is never refused here: what its scopes miss is hidden instead.
    """
    scopes = getattr(credential, "scopes", None)
    if scopes is None or not getattr(credential, "step_up", False):
        return
    method = getattr(message, "method", None)
    kind = KIND_OF_METHOD.get(method or "")
    if kind is None:
        return
    params = getattr(message, "params", None) or {}
    name = params.get(NAME_FIELD[method or ""]) if isinstance(params, Mapping) else None
    if not isinstance(name, str):
        return  # the server answers a malformed request as it would anyway
    names = [name, *templates_matching(mount, name)] if kind == "resources" else [name]
    if not allows(scopes, kind, names):
        raise InsufficientScope(scope_for(kind, name))
