"""The stored form of a listen stream's filter (``McpSession.listen_filter``), and its description in words.

A ``subscriptions/listen`` request names the events it wants: the three list changes, and resources by URI.
The record keeps what the server acknowledged, as plain JSON (the model app knows nothing of the SDK's
types). The URIs are the client's text: cleaned (:mod:`mcp_sessions.text`) and bounded in count and length,
so that a request listing thousands of them cannot make one record large; the count kept says how many
there were.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .text import clean_text

# Resource URIs kept on a record, and characters of each: enough to recognise a stream in the admin.
MAX_STORED_URIS = 50
MAX_URI_LENGTH = 500

LIST_KINDS = {"tools": "tools", "prompts": "prompts", "resources": "resource list"}


def stored_filter(*, tools: bool, prompts: bool, resources: bool, uris: Iterable[str]) -> dict[str, Any]:
    """What a record stores of a stream's acknowledged filter: the list changes asked for, and its URIs."""
    uris = list(uris)
    return {
        "lists": [
            kind for kind, wanted in (("tools", tools), ("prompts", prompts), ("resources", resources)) if wanted
        ],
        "resources": [clean_text(uri, MAX_URI_LENGTH) for uri in uris[:MAX_STORED_URIS]],
        "resource_count": len(uris),
    }


def describe_listen_filter(value: Any) -> str:
    """A stored filter in words, e.g. ``tools, prompts; 2 resources: file:///a, file:///b``; empty if none."""
    if not isinstance(value, dict):
        return ""
    parts = [LIST_KINDS[kind] for kind in value.get("lists", ()) if kind in LIST_KINDS]
    words = ", ".join(parts)
    count = value.get("resource_count", 0)
    if isinstance(count, int) and count:
        shown = ", ".join(str(uri) for uri in value.get("resources", ()))
        more = f" (+{count - len(value.get('resources', ()))} more)" if count > len(value.get("resources", ())) else ""
        noun = "resource" if count == 1 else "resources"
        words = f"{words}; {count} {noun}: {shown}{more}" if words else f"{count} {noun}: {shown}{more}"
    return words or "nothing"
