"""The demo's URLs plus a probe the tests use to count a server's asyncio tasks."""

import asyncio

from django.http import HttpRequest, JsonResponse
from django.urls import include, path


async def task_count(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"tasks": len(asyncio.all_tasks())})


urlpatterns = [
    path("_test/tasks", task_count),
    path("", include("demo.urls")),
]
