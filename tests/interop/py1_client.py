"""One MCP session with the Python SDK 1.x client (run in tests/interop/.venv-mcp1, not the project's env).

    python py1_client.py --url URL --transport sse|http [--header "Name: value"]... [--tool NAME] [--args JSON]

Prints one JSON line and exits 0 (``{"ok": true, "tools": [...], "text": ..., "isError": ...}``) or 1
(``{"ok": false, "status": <HTTP status or null>, "error": "..."}``). Uses ``sse_client(url, headers=)``
and ``streamablehttp_client(url, headers=)``, the 1.x API.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    found = [error]
    if error.__cause__ is not None:
        found += leaves(error.__cause__)
    return found


def status_of(error: BaseException) -> int | None:
    for leaf in leaves(error):
        if isinstance(leaf, httpx.HTTPStatusError):
            return leaf.response.status_code
    return None


async def session(args: argparse.Namespace, headers: dict[str, str]) -> dict[str, Any]:
    if args.transport == "sse":
        connection = sse_client(args.url, headers=headers, timeout=10, sse_read_timeout=args.timeout)
    else:
        connection = streamablehttp_client(args.url, headers=headers, timeout=10, sse_read_timeout=args.timeout)
    async with connection as streams, ClientSession(streams[0], streams[1]) as client:
        init = await client.initialize()
        tools = [tool.name for tool in (await client.list_tools()).tools]
        text, is_error = None, False
        if args.tool:
            result = await client.call_tool(args.tool, json.loads(args.args))
            text = "".join(block.text for block in result.content if block.type == "text")
            is_error = bool(result.isError)
        return {
            "ok": True,
            "tools": tools,
            "text": text,
            "isError": is_error,
            "protocolVersion": init.protocolVersion,
            "sdk": version("mcp"),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", choices=["sse", "http"], default="http")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--tool")
    parser.add_argument("--args", default="{}")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    headers = dict((part.strip() for part in h.split(":", 1)) for h in args.header)
    try:
        out = anyio.run(_bounded, args, headers)
    except BaseException as error:  # ExceptionGroups from the task groups included
        if isinstance(error, KeyboardInterrupt):
            raise
        status = status_of(error)
        print(json.dumps({"ok": False, "status": status, "error": "; ".join(map(repr, leaves(error)))[:2000]}))
        return 1
    print(json.dumps(out))
    return 0


async def _bounded(args: argparse.Namespace, headers: dict[str, str]) -> dict[str, Any]:
    with anyio.fail_after(args.timeout):
        return await session(args, headers)


if __name__ == "__main__":
    sys.exit(main())
