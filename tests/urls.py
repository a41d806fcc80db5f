"""The demo's URLs plus probes the tests use: a server's asyncio tasks, and counting client usage in it."""

import asyncio

from django.http import HttpRequest, JsonResponse
from django.urls import include, path


async def task_count(request: HttpRequest) -> JsonResponse:
    """How many asyncio tasks the server runs; with ``?stacks=1`` also where each one waits (to debug a leak)."""
    tasks = asyncio.all_tasks()
    body: dict[str, object] = {"tasks": len(tasks)}
    if request.GET.get("stacks"):
        body["stacks"] = [
            [f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}" for frame in task.get_stack()]
            for task in tasks
        ]
    return JsonResponse(body)


async def count_usage(request: HttpRequest) -> JsonResponse:
    """Count one request of the logged-in caller, as the transport of protocol 2026-07-28 does.

    ``?name=&version=`` are the client's ``clientInfo``, ``?protocol=`` its protocol version.
    """
    from django.conf import settings

    from mcp_gateway.auth import Credential, login_fingerprint
    from mcp_gateway.worker import worker
    from mcp_sessions.revocation import login_session_hash

    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({}, status=401)
    digest = login_session_hash(request.COOKIES[settings.SESSION_COOKIE_NAME])
    credential = Credential(
        user=user, scheme="session", ambient=True, login_session_hash=digest, fingerprint=login_fingerprint(digest)
    )
    client_info = {"name": request.GET.get("name"), "version": request.GET.get("version")}
    worker.usage.count(credential, client_info, request.GET.get("protocol"))
    return JsonResponse({"pending": worker.usage.pending})


async def parked_count(request: HttpRequest) -> JsonResponse:
    """How many sessions of this server have their MCP server loop parked (mcp_gateway/sessions/parking.py)."""
    from mcp_gateway.worker import worker

    return JsonResponse({"parked": sum(host.parked for host in list(worker._hosts.values()))})


urlpatterns = [
    path("_test/tasks", task_count),
    path("_test/parked", parked_count),
    path("_test/usage", count_usage),
    path("", include("demo.urls")),
]
