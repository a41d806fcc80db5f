"""The floor: a bare ASGI app speaking just enough MCP to be measured like a real server, and nothing more.

The yardstick for what the launcher (daphne) costs by itself: no Django, no authentication, no SDK, no
validation beyond what a client's answers need. Its one tool is ``echo`` (``{"text": ...}`` answered as that
text), on the three wires the gateway serves:

- HTTP+SSE: ``GET /sse`` opens a stream whose first event names ``/messages/?session_id=<id>``; a POST there
  is answered 202 and its reply goes out on the stream as an ``event: message``;
- Streamable HTTP (2025-11-25): ``POST /mcp/``; ``initialize`` issues an ``Mcp-Session-Id``, which every later
  POST carries (unknown: 404); requests are answered with JSON, notifications with 202;
- protocol 2026-07-28: ``POST /mcp/`` with an ``MCP-Protocol-Version: 2026-07-28`` header, each request
  self-contained (no session), answered with JSON.

Methods: ``initialize``, ``ping``, ``tools/list``, ``tools/call`` (``echo``), ``server/discover``; other
requests get JSON-RPC ``-32601``. A session is a small dict entry (its protocol version and, for SSE, the
stream's ``send``), so an idle initialized session costs what the ASGI server costs for its connection.
Run it under the launcher: ``python -m mcp_gateway.daphne bench.floor:application``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODERN = "2026-07-28"
CLASSIC = "2025-11-25"
SERVER_INFO = {"name": "floor", "version": "1"}
ECHO = {
    "name": "echo",
    "description": "Return the text unchanged.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
JSON = [(b"content-type", b"application/json")]

# Open HTTP+SSE streams by session id: the stream's ``send``. Streamable HTTP sessions: their protocol version.
streams: dict[str, Send] = {}
sessions: dict[str, str] = {}


def answer(message: dict[str, Any], version: str) -> dict[str, Any] | None:
    """The JSON-RPC response to ``message`` (None for a notification or a response)."""
    if "id" not in message or "method" not in message:
        return None
    method, params, reply_id = message["method"], message.get("params") or {}, message["id"]
    result: dict[str, Any]
    if method == "tools/call" and params.get("name") == "echo":
        text = str((params.get("arguments") or {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text}], "structuredContent": {"result": text}, "isError": False}
    elif method == "initialize":
        requested = params.get("protocolVersion")
        protocol = requested if requested in ("2025-03-26", "2025-06-18", CLASSIC) else CLASSIC
        result = {"protocolVersion": protocol, "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
    elif method == "tools/list":
        result = {"tools": [ECHO]}
    elif method == "ping":
        result = {}
    elif method == "server/discover":
        result = {"supportedVersions": [MODERN, CLASSIC], "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
    else:
        return {"jsonrpc": "2.0", "id": reply_id, "error": {"code": -32601, "message": f"Unknown method {method}"}}
    return {"jsonrpc": "2.0", "id": reply_id, "result": result}


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def respond(send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [*(headers or JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def sse_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /sse``: the endpoint event, then replies as they come, until the client goes."""
    session_id = secrets.token_hex(16)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    endpoint = f"event: endpoint\ndata: {scope.get('root_path', '')}/messages/?session_id={session_id}\n\n"
    await send({"type": "http.response.body", "body": endpoint.encode(), "more_body": True})
    streams[session_id] = send
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        streams.pop(session_id, None)


async def sse_post(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /messages/?session_id=…``: 202, the reply on the session's stream."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    stream = streams.get((query.get("session_id") or [""])[0])
    body = await read_body(receive)
    if stream is None:
        await respond(send, 404, b'{"error": "unknown session"}')
        return
    try:
        reply = answer(json.loads(body), CLASSIC)
    except ValueError:
        await respond(send, 400, b'{"error": "bad JSON"}')
        return
    await respond(send, 202, b"Accepted", [(b"content-type", b"text/plain")])
    if reply is not None:
        event = b"event: message\ndata: " + json.dumps(reply).encode() + b"\n\n"
        await stream({"type": "http.response.body", "body": event, "more_body": True})


async def streamable_post(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /mcp/``: Streamable HTTP (by session) or 2026-07-28 (self-contained), answered with JSON."""
    body = await read_body(receive)
    try:
        message = json.loads(body)
    except ValueError:
        await respond(send, 400, b'{"error": "bad JSON"}')
        return
    version = header(scope, b"mcp-protocol-version")
    headers = JSON
    if version == MODERN:
        pass  # self-contained: nothing to look up
    elif message.get("method") == "initialize":
        session_id = secrets.token_hex(16)
        sessions[session_id] = CLASSIC
        headers = [*JSON, (b"mcp-session-id", session_id.encode())]
    elif header(scope, b"mcp-session-id") not in sessions:
        error = {"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": -32600, "message": "Session not found"}}
        await respond(send, 404, json.dumps(error).encode())
        return
    reply = answer(message, version or CLASSIC)
    if reply is None:
        await respond(send, 202, b"", [])
    else:
        await respond(send, 200, json.dumps(reply).encode(), headers)


async def delete_session(scope: Scope, receive: Receive, send: Send) -> None:
    await read_body(receive)
    found = sessions.pop(header(scope, b"mcp-session-id") or "", None)
    await respond(send, 200 if found else 404, b"{}")


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Route by method and path; anything else is 404."""
    if scope["type"] != "http":
        return
    route = (scope["method"], scope["path"])
    if route == ("GET", "/sse"):
        await sse_stream(scope, receive, send)
    elif route == ("POST", "/messages/"):
        await sse_post(scope, receive, send)
    elif route == ("POST", "/mcp/"):
        await streamable_post(scope, receive, send)
    elif route == ("DELETE", "/mcp/"):
        await delete_session(scope, receive, send)
    else:
        await read_body(receive)
        await respond(send, 404, b'{"error": "not found"}')
