"""The demo's URLs plus a probe the tests use to count a server's asyncio tasks."""

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


urlpatterns = [
    path("_test/tasks", task_count),
    path("", include("demo.urls")),
]
