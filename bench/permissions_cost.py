"""In one process, the CPU the gatekeeper spends per call: its request path and its share of the record writer.

Run by bench/permissions.py (``python -m bench.permissions_cost CALLS``, with its settings and database): the
gatekeeper of bench/permissions_app.py's mount is called ``CALLS`` times with a context as the gateway makes it
and a ``call_next`` that answers at once, then the record writer drains (digests, rows, one insert per batch).
Less disturbed by the machine's other load than the end-to-end figures: prints JSON, milliseconds per call.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def measure(calls: int) -> dict[str, float]:
    from django.contrib.auth import get_user_model
    from mcp.server.context import ServerRequestContext

    from bench.permissions_app import application
    from mcp_gateway.context import GatewayRequestContext
    from mcp_gateway.gatekeeper import Gatekeeper
    from mcp_sessions import calls as call_log

    mount = application.mounts[0]
    gatekeeper = next(m for m in mount.session_server.middleware if isinstance(m, Gatekeeper))
    user = await get_user_model().objects.aget(username="bench")
    request = GatewayRequestContext(
        user=user, session_ref="0123456789ab", transport="sse", server="/mcp/", credential_kind="token", token_id=1
    )
    result = {"content": [{"type": "text", "text": "hello"}], "isError": False}

    async def call_next(ctx: Any) -> Any:
        return result

    def context() -> Any:
        params = {"name": "echo", "arguments": {"text": "hello"}}
        return ServerRequestContext(
            session=None,  # type: ignore[arg-type]
            lifespan_context={},
            protocol_version="2025-11-25",
            method="tools/call",
            params=params,
            request_id=1,
            request=request,
        )

    async def drained() -> None:
        writer = call_log.log._writer
        if writer is not None:
            await writer  # it ends once nothing is queued

    for _ in range(50):  # warm: the user's permissions cached, the writer's first batch
        await gatekeeper(context(), call_next)
    await drained()
    started = time.process_time()
    for _ in range(calls):
        await gatekeeper(context(), call_next)
    path = time.process_time() - started
    await drained()
    total = time.process_time() - started
    return {"request_path_ms": path / calls * 1000, "with_records_ms": total / calls * 1000}


def main() -> None:
    import django
    from django.conf import settings

    django.setup()
    settings.MCP_GATEWAY_CALL_RECORDS_PER_MINUTE = 10**9  # every record stored: its whole cost counted
    print(json.dumps(asyncio.run(measure(int(sys.argv[1])))))


if __name__ == "__main__":
    main()
