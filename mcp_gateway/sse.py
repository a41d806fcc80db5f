"""Server-Sent Events framing."""

from __future__ import annotations

CONTENT_TYPE = b"text/event-stream"


def event(name: str, data: str, event_id: str | None = None) -> bytes:
    """One event; multi-line data is split into ``data:`` lines as the format requires."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\n{lines}\n".encode()


def comment(text: str) -> bytes:
    """A comment line: ignored by clients, keeps proxies from timing out an idle stream."""
    return f": {text}\n\n".encode()
