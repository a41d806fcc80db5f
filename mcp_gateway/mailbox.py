# TEMPORARY re-export: moved to mcp_gateway.sessions.mailbox; kept for branches not merged yet, removed after the merge.
"""Moved: :mod:`mcp_gateway.sessions.mailbox`."""

from .sessions.mailbox import Mailbox, SourcedMailbox

__all__ = ["Mailbox", "SourcedMailbox"]
