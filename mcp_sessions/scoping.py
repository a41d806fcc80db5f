"""The words of the scope vocabulary, below the models: what an access token may be limited to.

:mod:`mcp_gateway.scopes` is the vocabulary's reference (what each scope reaches, OAuth's ``scopes_supported``,
step-up); the model app only stores a token's scopes and needs to know a well-formed one.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    kind, _, name = scope.removeprefix("mcp:").partition(":")
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
