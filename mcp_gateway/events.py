# TEMPORARY re-export: moved to mcp_gateway.sessions.events; kept for branches not merged yet, removed after the merge.
"""Moved: :mod:`mcp_gateway.sessions.events`."""

from .sessions.events import MAIN_STREAM, Event, EventBuffer, EventId, EventsLost, UnknownEvent

__all__ = ["MAIN_STREAM", "Event", "EventBuffer", "EventId", "EventsLost", "UnknownEvent"]
